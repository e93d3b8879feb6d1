"""Crash-safe file writing shared by every writer in cleanpose (frames, pickles, checkpoints).

A file is written under a temporary name in its own folder, flushed to disk, then renamed over the
target with `os.replace`, which is atomic on POSIX and Windows: a reader sees either the old file or
the complete new one, never a half-written file, even when the writer is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cleanpose.errors import OutputError


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it replaces `path`, else it is removed.

    Args:
        path: the final file path; its folder must exist.
        mode: "wb" or "w".

    Yields:
        The open temporary file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


def ensure_writable_folder(folder: str | os.PathLike, min_free_bytes: int = 0) -> Path:
    """Create `folder` if needed and check that a file can be written there with room to spare.

    Raises:
        OutputError: the folder cannot be created or written, or has less than `min_free_bytes` free.
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / ".write_probe", b"ok")
        (path / ".write_probe").unlink()
    except OSError as error:
        raise OutputError(f"{path}: folder is not writable ({error.strerror or error})") from error
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise OutputError(
            f"{path}: only {free / 2**20:.1f} MiB free on its disk; need at least {min_free_bytes / 2**20:.1f} MiB"
        )
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
