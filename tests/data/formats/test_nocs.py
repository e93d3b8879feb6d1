"""NOCS reader: label validation, list files, structural paths, models."""

import numpy as np
import pytest

from cleanpose.data.formats import nocs
from cleanpose.data.formats.encoding import read_pickle, write_pickle_atomic, write_text_atomic
from cleanpose.errors import DataFormatError


def test_read_label_round_trip(nocs_tree):
    path = nocs_tree.root / "real/train/scene_1/0000_label.pkl"
    stored = read_pickle(path)
    label = nocs.read_label(path)
    assert len(label) == 2
    np.testing.assert_array_equal(label.class_ids, stored["class_ids"])
    np.testing.assert_array_equal(label.bboxes, stored["bboxes"])
    assert label.model_names == tuple(stored["model_list"])
    np.testing.assert_array_equal(label.rotations, stored["rotations"])
    np.testing.assert_array_equal(label.translations, stored["translations"])
    assert label.scales.dtype == np.float32 and label.sizes.shape == (2, 3)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("bboxes"), r"label has no key 'bboxes'"),
        (lambda d: d.pop("model_list"), r"label has no key 'model_list'"),
        (lambda d: d.update(rotations=np.zeros((2, 3))), r"label key 'rotations' has shape \(2, 3\)"),
        (lambda d: d.update(scales=np.ones(3, np.float32)), r"'scales' has 3 entries but 'instance_ids' has 2"),
        (lambda d: d.update(class_ids=[1, 7]), r"class_ids \[1, 7\] outside 1..6"),
        (lambda d: d.update(translations=np.full((2, 3), np.nan)), r"'translations' contains NaN"),
    ],
)
def test_read_label_errors_name_file_and_key(nocs_tree, tmp_path, edit, message):
    data = read_pickle(nocs_tree.root / "real/train/scene_1/0000_label.pkl")
    edit(data)
    path = tmp_path / "bad_label.pkl"
    write_pickle_atomic(path, data)
    with pytest.raises(DataFormatError, match=f"bad_label.pkl: .*{message}"):
        nocs.read_label(path)


def test_read_label_truncated_pickle(tmp_path, nocs_tree):
    data = (nocs_tree.root / "real/train/scene_1/0000_label.pkl").read_bytes()
    path = tmp_path / "cut_label.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="cut_label.pkl: not a readable pickle"):
        nocs.read_label(path)


def test_train_frames_prefix_source(nocs_tree):
    assert nocs.train_frames(nocs_tree.root, "camera") == [f"camera/{e}" for e in nocs_tree.camera_train]
    assert nocs.train_frames(nocs_tree.root, "real")[0] == "real/train/scene_1/0000"


def test_train_frames_missing_and_empty_list(tmp_path):
    with pytest.raises(DataFormatError, match=r"real/train_list.txt: list file not found"):
        nocs.train_frames(tmp_path, "real")
    (tmp_path / "real").mkdir()
    write_text_atomic(tmp_path / "real/train_list.txt", "\n\n")
    with pytest.raises(DataFormatError, match="list file is empty"):
        nocs.train_frames(tmp_path, "real")
    with pytest.raises(ValueError, match="unknown NOCS source 'syn'"):
        nocs.train_frames(tmp_path, "syn")


def test_depth_path_is_structural(tmp_path):
    # A root that itself contains "/camera/" must not be rewritten (docs/data_formats.md P12).
    root = tmp_path / "camera" / "data"
    assert nocs.depth_path(root, "camera/train/00012/0003") == root / "camera_full_depths/train/00012/0003_composed.png"
    assert nocs.depth_path(root, "real/test/scene_1/0007") == root / "real/test/scene_1/0007_depth.png"


def test_intrinsics_table():
    np.testing.assert_array_equal(nocs.intrinsics_for("camera"), [[577.5, 0, 319.5], [0, 577.5, 239.5], [0, 0, 1]])
    k = nocs.intrinsics_for("real")
    assert (k[0, 0], k[1, 1], k[0, 2], k[1, 2]) == (591.0125, 590.16775, 322.525, 244.11084)


def test_read_models(nocs_tree, tmp_path):
    models = nocs.read_models(nocs_tree.root / "obj_models/real_train.pkl")
    stored = read_pickle(nocs_tree.root / "obj_models/real_train.pkl")
    assert set(models) == set(stored)
    for name, points in models.items():
        assert points.dtype == np.float32
        np.testing.assert_array_equal(points, stored[name].astype(np.float32))
    write_pickle_atomic(tmp_path / "bad.pkl", {"m": np.zeros((5, 2))})
    with pytest.raises(DataFormatError, match=r"bad.pkl: model 'm' has shape \(5, 2\); expected \(M, 3\)"):
        nocs.read_models(tmp_path / "bad.pkl")


def test_mug_meta_and_relabel(tmp_path):
    write_pickle_atomic(tmp_path / "mug_meta.pkl", {"m": [np.array([0.1, 0.0, 0.0]), 0.5]})
    shift, scale = nocs.read_mug_meta(tmp_path / "mug_meta.pkl")["m"]
    np.testing.assert_array_equal(shift, [0.1, 0.0, 0.0])
    rotation = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # 90 deg about y: x -> -z
    translation, new_scale = nocs.relabel_mug(rotation, np.array([0.0, 0.0, 1.0]), 0.2, shift, scale)
    np.testing.assert_allclose(translation, [0.0, 0.0, 1.0 + 0.02], atol=1e-7)
    assert new_scale == np.float32(0.4)
    write_pickle_atomic(tmp_path / "bad.pkl", {"m": [1.0]})
    with pytest.raises(DataFormatError, match=r"bad.pkl: mug 'm' entry is not \[shift \(3,\), scale\]"):
        nocs.read_mug_meta(tmp_path / "bad.pkl")
