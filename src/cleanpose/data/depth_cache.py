"""Filled depth per file, cached in memory (LRU) and optionally on disk."""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from cleanpose.data.depth_completion import fill_missing
from cleanpose.data.formats.encoding import read_depth
from cleanpose.errors import DataFormatError
from cleanpose.fileio import atomic_writer

logger = logging.getLogger(__name__)


def source_key(path: Path, what: str) -> str:
    """Cache key of a source file: SHA-1 hex of its resolved path, modification time (ns) and size.

    Raises:
        DataFormatError: the file (a `what` file, e.g. "depth") does not exist.
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: {what} file not found") from None
    text = f"{path.resolve()}|{status.st_mtime_ns}|{status.st_size}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class FilledDepthCache:
    """`fill_missing` output per depth file, cached in memory (LRU) and optionally on disk.

    The filled depth is a deterministic function of the file, so it is cached under a key made of
    the resolved path, its modification time (ns) and size: an edited file is filled again. Disk
    entries are float32 ``.npy`` files (1.2 MB for a 640 × 480 frame) written atomically.

    Args:
        cache_dir: folder for ``.npy`` entries; None for no disk cache.
        max_items: in-memory LRU capacity per process (0 disables it).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, max_items: int = 0) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._memory: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def filled_depth(self, path: str | os.PathLike) -> np.ndarray:
        """(H, W) float32 millimetres: `fill_missing` of the decoded depth file.

        Raises:
            DataFormatError: the file is missing, unreadable or not a depth image.
        """
        path = Path(path)
        if self.cache_dir is None and self.max_items == 0:
            return fill_missing(read_depth(path))
        key = source_key(path, "depth")
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        filled = None
        disk_path = self.cache_dir / f"{key}.npy" if self.cache_dir is not None else None
        if disk_path is not None and disk_path.exists():
            try:
                filled = np.load(disk_path)
            except (OSError, ValueError) as error:
                logger.warning("%s: unreadable depth cache entry for %s, refilling (%s)", disk_path, path, error)
        if filled is None:
            filled = fill_missing(read_depth(path))
            if disk_path is not None:
                with atomic_writer(disk_path) as handle:
                    np.save(handle, filled)
        if self.max_items > 0:
            self._memory[key] = filled
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)
        return filled
