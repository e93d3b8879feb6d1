import os

import pytest

from cleanpose.errors import OutputError
from cleanpose.fileio import atomic_write_bytes, atomic_writer, ensure_writable_folder


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_interrupted_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(target, "w") as handle:
            handle.write("half of the new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_ensure_writable_folder_creates_and_checks_space(tmp_path):
    folder = ensure_writable_folder(tmp_path / "x" / "y")
    assert folder.is_dir() and list(folder.iterdir()) == []
    with pytest.raises(OutputError, match=r"MiB free on its disk; need at least"):
        ensure_writable_folder(tmp_path, min_free_bytes=2**62)


def test_ensure_writable_folder_rejects_a_path_under_a_file(tmp_path):
    blocker = tmp_path / "plain_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=r"plain_file/logs: folder is not writable"):
        ensure_writable_folder(blocker / "logs")


def test_atomic_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
