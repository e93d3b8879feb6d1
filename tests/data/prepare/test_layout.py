"""Raw-folder lookup, the reference list builders and atomic file placement."""

import errno
import os

import pytest

from cleanpose.data.prepare import layout
from cleanpose.errors import DataFormatError


def test_camera_list_has_ten_entries_per_folder_whatever_the_names(tmp_path):
    for name in ("00000", "00007", "zz"):
        (tmp_path / name).mkdir()
    (tmp_path / "stray.txt").write_text("x")
    entries = layout.list_entries(tmp_path, "camera_val")
    assert entries == [f"val/{i // 10:05d}/{i % 10:04d}" for i in range(30)]


def test_real_list_sorts_scenes_then_colour_files(tmp_path):
    for scene, frames in (("scene_2", ("0001", "0000")), ("scene_10", ("0003",))):
        (tmp_path / scene).mkdir()
        for frame in frames:
            (tmp_path / scene / f"{frame}_color.png").write_bytes(b"")
            (tmp_path / scene / f"{frame}_depth.png").write_bytes(b"")
    assert layout.list_entries(tmp_path, "real_test") == [
        "test/scene_10/0003",
        "test/scene_2/0000",
        "test/scene_2/0001",
    ]


def test_raw_layout_accepts_both_spellings(tmp_path):
    (tmp_path / "CAMERA" / "train").mkdir(parents=True)
    (tmp_path / "real" / "test").mkdir(parents=True)
    found = layout.RawLayout.find(tmp_path)
    assert found.subset_dir("camera_train") == tmp_path / "CAMERA" / "train"
    assert found.subset_dir("real_test") == tmp_path / "real" / "test"
    with pytest.raises(DataFormatError, match="split real_train: raw folder missing"):
        found.subset_dir("real_train")
    with pytest.raises(DataFormatError, match="obj_models: folder missing"):
        found.require_models()


def test_place_file_links_replaces_and_keeps(tmp_path):
    source, target = tmp_path / "a.png", tmp_path / "b.png"
    source.write_bytes(b"one")
    layout.place_file(source, target)
    assert os.path.samefile(source, target)
    inode = target.stat().st_ino
    layout.place_file(source, target)  # already the same file: untouched
    assert target.stat().st_ino == inode
    other = tmp_path / "c.png"
    other.write_bytes(b"two")
    layout.place_file(other, target)  # a different file: replaced
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]


def test_place_file_falls_back_to_a_symbolic_link_across_devices(tmp_path, monkeypatch):
    source, target = tmp_path / "a.png", tmp_path / "b.png"
    source.write_bytes(b"one")

    def cross_device(*_):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    layout.place_file(source, target)
    assert target.is_symlink() and os.readlink(target) == str(source.resolve()) and target.read_bytes() == b"one"
    with pytest.raises(FileNotFoundError):
        layout.place_file(tmp_path / "missing.png", tmp_path / "d.png")
