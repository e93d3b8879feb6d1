"""Segmentation-result reader: folder preference, image-path handling, validation, result records."""

import numpy as np
import pytest

from cleanpose.data.formats import segmentation
from cleanpose.data.formats.encoding import read_pickle, write_pickle_atomic
from cleanpose.errors import DataFormatError


def test_prefers_code_folder_then_readme_folder(tmp_path):
    expected = r"none of .*results/nocs_results/real_test, .*segmentation_results/REAL275"
    with pytest.raises(DataFormatError, match=expected):
        segmentation.find_results_dir(tmp_path, "real")
    (tmp_path / "segmentation_results/REAL275").mkdir(parents=True)
    assert segmentation.find_results_dir(tmp_path, "real") == tmp_path / "segmentation_results/REAL275"
    (tmp_path / "results/nocs_results/real_test").mkdir(parents=True)
    assert segmentation.find_results_dir(tmp_path, "real") == tmp_path / "results/nocs_results/real_test"
    (tmp_path / "segmentation_results/CAMERA25").mkdir(parents=True)
    assert segmentation.find_results_dir(tmp_path, "camera") == tmp_path / "segmentation_results/CAMERA25"


def test_list_result_files_sorted(tmp_path):
    for name in ("results_b.pkl", "results_a.pkl", "other.pkl"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in segmentation.list_result_files(tmp_path)] == ["results_a.pkl", "results_b.pkl"]
    with pytest.raises(DataFormatError, match="no results_\\*.pkl files"):
        segmentation.list_result_files(tmp_path / "missing")


@pytest.mark.parametrize(
    "stored, prefix",
    [
        ("data/real/test/scene_1/0000", "real/test/scene_1/0000"),
        ("real/test/scene_1/0000", "real/test/scene_1/0000"),  # P3: no 'data/' prefix, keep as is
        ("./data/camera/val/00000/0003", "camera/val/00000/0003"),
    ],
)
def test_frame_prefix_from_image_path(stored, prefix):
    assert segmentation.frame_prefix_from_image_path(stored) == prefix


def test_read_segmentation_result(nocs_tree):
    result = segmentation.read_segmentation_result(nocs_tree.real_test_result)
    stored = read_pickle(nocs_tree.real_test_result)
    assert result.frame_prefix == "real/test/scene_1/0000"
    assert len(result) == 3
    np.testing.assert_array_equal(result.pred_masks, stored["pred_masks"])
    np.testing.assert_array_equal(result.pred_bboxes, stored["pred_bboxes"])
    for key in segmentation.GT_KEYS:
        np.testing.assert_array_equal(result.ground_truth[key], stored[key])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("gt_handle_visibility"), r"segmentation result lacks key\(s\) \['gt_handle_visibility'\]"),
        (lambda d: d.update(pred_scores=np.ones(2)), "3 pred_class_ids but 3 pred_bboxes and 2 pred_scores"),
        (lambda d: d.update(pred_masks=np.zeros((120, 160, 2), bool)), r"pred_masks has shape \(120, 160, 2\)"),
    ],
)
def test_segmentation_result_errors(nocs_tree, tmp_path, edit, message):
    data = read_pickle(nocs_tree.real_test_result)
    edit(data)
    write_pickle_atomic(tmp_path / "results_bad.pkl", data)
    with pytest.raises(DataFormatError, match=f"results_bad.pkl: {message}"):
        segmentation.read_segmentation_result(tmp_path / "results_bad.pkl")


def test_result_record_hand_values():
    gt = {key: np.zeros(1) for key in segmentation.GT_KEYS}
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    record = segmentation.result_record(
        gt, [6], [[1, 2, 3, 4]], [0.9], rotation[None], [[0.1, 0.2, 0.3]], [[0.3, 0.4, 0.0]]
    )
    expected = np.eye(4, dtype=np.float32)
    expected[:3, :3] = rotation * 0.5  # |size| = 0.5
    expected[:3, 3] = [0.1, 0.2, 0.3]
    np.testing.assert_allclose(record["pred_RTs"][0], expected, atol=1e-7)
    np.testing.assert_allclose(record["pred_scales"][0], [0.6, 0.8, 0.0], atol=1e-7)
    assert record["pred_RTs"].dtype == np.float32 and set(gt) <= set(record)
    empty = segmentation.result_record(
        gt, [], np.zeros((0, 4)), [], np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros((0, 3))
    )
    assert empty["pred_RTs"].shape == (0, 4, 4) and empty["pred_scales"].shape == (0, 3)
