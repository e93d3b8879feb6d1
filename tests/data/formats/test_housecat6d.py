"""HouseCat6D reader: scenes, structural frame paths, intrinsics, labels, ground-truth record."""

import numpy as np
import pytest

from cleanpose.data.formats import housecat6d
from cleanpose.data.formats.encoding import read_pickle, write_pickle_atomic
from cleanpose.errors import DataFormatError
from tests.data.conftest import HOUSECAT_INTRINSICS, build_housecat_tree


def test_scenes_and_frames(housecat_tree):
    assert [s.name for s in housecat6d.list_scenes(housecat_tree, "train")] == ["scene01", "scene02"]
    assert [s.name for s in housecat6d.list_scenes(housecat_tree, "test")] == ["test_scene1"]
    frames = housecat6d.list_frames(housecat_tree / "scene01")
    assert [f.name for f in frames] == ["000000", "000001"]
    assert frames[1].label_path == housecat_tree / "scene01/labels/000001_label.pkl"


def test_paths_structural_when_root_contains_rgb(tmp_path):
    root = build_housecat_tree(tmp_path / "rgb_data", frames_per_scene=1)  # docs/data_formats.md P12
    frame = housecat6d.list_frames(root / "scene01")[0]
    assert frame.depth_path == root / "scene01/depth/000000.png" and frame.depth_path.exists()
    assert frame.instance_path.exists() and frame.label_path.exists()


def test_read_intrinsics(housecat_tree, tmp_path):
    intrinsics = housecat6d.read_intrinsics(housecat_tree / "scene01/intrinsics.txt")
    np.testing.assert_array_equal(intrinsics, HOUSECAT_INTRINSICS)
    (tmp_path / "k.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(DataFormatError, match="k.txt: intrinsics file has 6 numbers; expected 9"):
        housecat6d.read_intrinsics(tmp_path / "k.txt")
    with pytest.raises(DataFormatError, match="nothing.txt: intrinsics file not found"):
        housecat6d.read_intrinsics(tmp_path / "nothing.txt")


def test_label_and_ground_truth_record(housecat_tree):
    path = housecat_tree / "test_scene1/labels/000000_label.pkl"
    stored = read_pickle(path)
    label = housecat6d.read_label(path)
    np.testing.assert_array_equal(label.sizes, stored["gt_scales"])
    record = housecat6d.ground_truth_record(label)
    for i in range(len(label)):
        norm = np.linalg.norm(stored["gt_scales"][i].astype(np.float64))
        np.testing.assert_allclose(record["gt_RTs"][i, :3, :3], stored["rotations"][i] * norm, rtol=1e-6)
        np.testing.assert_allclose(record["gt_RTs"][i, :3, 3], stored["translations"][i], rtol=1e-7)
        np.testing.assert_array_equal(record["gt_RTs"][i, 3], [0, 0, 0, 1])
        np.testing.assert_allclose(record["gt_scales"][i], stored["gt_scales"][i] / norm, rtol=1e-6)
    assert record["gt_handle_visibility"] is None
    np.testing.assert_array_equal(record["gt_class_ids"], stored["class_ids"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("gt_scales"), r"label lacks key\(s\) \['gt_scales'\]"),
        (lambda d: d.update(bboxes=np.zeros((2, 3))), r"label key 'bboxes' has shape \(2, 3\); expected \(2, 4\)"),
        (lambda d: d.update(class_ids=np.array([2, 11])), r"label class_ids \[2, 11\] outside 1..10"),
    ],
)
def test_label_errors(housecat_tree, tmp_path, edit, message):
    data = read_pickle(housecat_tree / "scene01/labels/000000_label.pkl")
    edit(data)
    write_pickle_atomic(tmp_path / "x_label.pkl", data)
    with pytest.raises(DataFormatError, match=f"x_label.pkl: {message}"):
        housecat6d.read_label(tmp_path / "x_label.pkl")


def test_no_scenes(tmp_path):
    with pytest.raises(DataFormatError, match=r"no HouseCat6D test scenes \(test_scene\*/rgb\)"):
        housecat6d.list_scenes(tmp_path, "test")
