"""`annotate_frame` on hand-made raw frames: poses recovered against the pose the frame was drawn
from (CAMERA RANSAC-Umeyama and REAL PnP), and every filter rule of the reference preprocessing."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cleanpose.data.formats import encoding
from cleanpose.data.prepare.annotate import IMPROPER_MUG, ModelSizes, annotate_frame, annotate_test_frame
from cleanpose.errors import DataFormatError

K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
SIZES = ModelSizes(
    {
        "03797390/mugA": np.array([0.5, 0.6, 0.62]),
        "02876657/botA": np.array([0.3, 0.9, 0.3]),
        f"03797390/{IMPROPER_MUG}": np.array([0.5, 0.5, 0.5]),
    }
)
REAL_SIZES = ModelSizes(
    {"mugA": np.array([0.6, 0.0, 0.8]), "botA": np.array([0.0, 1.0, 0.0])}, {"mugA": 0.8, "botA": 0.8}
)


def _curved_object(box, shape):
    """Depth (mm) of a curved surface over a pixel box and its back-projected points (mm)."""
    r0, c0, r1, c1 = box
    depth = np.zeros(shape, dtype=np.uint16)
    rows, cols = np.mgrid[r0:r1, c0:c1]
    depth[r0:r1, c0:c1] = np.rint(700 + 0.8 * (cols - (c0 + c1) / 2) ** 2 + 0.5 * (rows - r0) ** 2)
    z = depth[r0:r1, c0:c1].astype(np.float64)
    points = np.stack([(cols - K[0, 2]) * z / K[0, 0], (rows - K[1, 2]) * z / K[1, 1], z], axis=-1)
    return depth, points


def _write_frame(prefix, instances, shape=(48, 64), real=False, meta_rows=None, background=255):
    """Write a raw frame; `instances` = [(instance id, class id, model, box)]. Returns the poses (R, t mm, s mm)."""
    depth = np.zeros(shape, dtype=np.uint16)
    mask = np.full(shape, background, dtype=np.uint8)
    nocs = np.zeros(shape + (3,))
    poses = {}
    for number, (instance_id, _, _, box) in enumerate(instances):
        r0, c0, r1, c1 = box
        object_depth, points = _curved_object(box, shape)
        depth[r0:r1, c0:c1] = object_depth[r0:r1, c0:c1]
        mask[r0:r1, c0:c1] = instance_id
        rotation = Rotation.from_euler("xyz", [20 + 10 * number, -35, 50]).as_matrix()
        translation = points.reshape(-1, 3).mean(axis=0)
        scale = 800.0 if real else 2.3 * np.abs(points.reshape(-1, 3) - translation).max()
        nocs[r0:r1, c0:c1] = (points - translation) @ rotation / scale
        poses[instance_id] = (rotation, translation, scale)
    encoding.write_depth(f"{prefix}_depth.png", depth, three_channel=not real)
    encoding.write_mask(f"{prefix}_mask.png", mask)
    encoding.write_coord(f"{prefix}_coord.png", nocs, mask != background)
    encoding.write_color(f"{prefix}_color.png", np.zeros(shape + (3,), np.uint8))
    rows = meta_rows or [
        encoding.MetaRow(i, c, m, None if real else s)
        for i, c, (s, m), _ in [(i, c, (m.split("/") if not real else (None, m)), b) for i, c, m, b in instances]
    ]
    encoding.write_meta(f"{prefix}_meta.txt", rows)
    return poses


def _angle(a, b):
    return np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)))


@pytest.mark.parametrize("real", [False, True])
def test_recovers_the_drawn_pose(tmp_path, real):
    prefix = str(tmp_path / "0000")
    names = ["mugA", "botA"] if real else ["03797390/mugA", "02876657/botA"]
    poses = _write_frame(prefix, [(1, 6, names[0], (5, 4, 25, 30)), (3, 1, names[1], (20, 35, 44, 60))], real=real)
    sizes = REAL_SIZES if real else SIZES
    result = annotate_frame(prefix, "real" if real else "camera", sizes, K, np.random.RandomState(0))
    label = result.label
    assert result.reason is None and result.notes == []
    assert label["class_ids"] == [6, 1] and label["instance_ids"] == [1, 3] and label["model_list"] == ["mugA", "botA"]
    np.testing.assert_array_equal(label["bboxes"], [[5, 4, 25, 30], [20, 35, 44, 60]])
    assert label["bboxes"].dtype == np.int32 and label["rotations"].dtype == np.float32
    for i, instance_id in enumerate((1, 3)):
        rotation, translation, scale = poses[instance_id]
        assert _angle(rotation, label["rotations"][i].astype(float)) < 1.0
        np.testing.assert_allclose(label["translations"][i] * 1000, translation, atol=2.0)
        assert label["scales"][i] * 1000 == pytest.approx(scale, rel=0.01)
    np.testing.assert_allclose(label["sizes"], [sizes.sizes[name] for name in names], rtol=1e-6)


def test_filters_follow_the_reference(tmp_path):
    prefix = str(tmp_path / "0000")
    rows = [
        encoding.MetaRow(1, 6, "mugA", "03797390"),
        encoding.MetaRow(2, 0, "distractor", "00000000"),
        encoding.MetaRow(3, 1, "botA", "02876657"),
        encoding.MetaRow(4, 6, IMPROPER_MUG, "03797390"),
        encoding.MetaRow(9, 1, "botA", "02876657"),
    ]  # id 9 is not in the mask
    _write_frame(
        prefix,
        [
            (1, 6, "03797390/mugA", (5, 4, 25, 30)),
            (2, 0, "x/y", (30, 2, 40, 12)),
            (3, 1, "02876657/botA", (40, 40, 45, 50)),  # 50 pixels < 64
            (4, 6, f"03797390/{IMPROPER_MUG}", (26, 40, 38, 60)),
            (5, 1, "x/y", (2, 50, 12, 60)),
        ],
        meta_rows=rows,
    )  # id 5 has no meta line
    result = annotate_frame(prefix, "camera", SIZES, K, np.random.RandomState(0))
    assert result.label["instance_ids"] == [1]
    assert result.notes == [
        "mask id 5 has no meta line (ignored)",
        "instance 3: 50 pixels with depth < 64",
        f"instance 4: improper mug model {IMPROPER_MUG} skipped",
    ]


def test_frame_dropped_when_no_instance_survives(tmp_path):
    prefix = str(tmp_path / "0000")
    _write_frame(prefix, [(1, 1, "02876657/botA", (5, 5, 12, 12))])
    result = annotate_frame(prefix, "camera", SIZES, K, np.random.RandomState(0))
    assert result.label is None and result.reason == "no instance left after the filters"


def test_frame_dropped_on_a_too_large_box(tmp_path):
    prefix = str(tmp_path / "0000")
    _write_frame(prefix, [(1, 1, "02876657/botA", (1, 2, 7, 610))], shape=(8, 640))
    result = annotate_frame(prefix, "camera", SIZES, K, np.random.RandomState(0))
    assert result.label is None and "608x6 px exceeds 600x440" in result.reason


def test_frame_dropped_on_missing_model_background_or_files(tmp_path):
    prefix = str(tmp_path / "a")
    _write_frame(prefix, [(1, 1, "02876657/unknown", (5, 4, 25, 30))])
    assert (
        "model 02876657/unknown of instance 1 missing from obj_models"
        in annotate_frame(prefix, "camera", SIZES, K, np.random.RandomState(0)).reason
    )
    prefix = str(tmp_path / "b")
    _write_frame(prefix, [(1, 1, "02876657/botA", (5, 4, 25, 30))], background=0)
    assert (
        annotate_frame(prefix, "camera", SIZES, K, np.random.RandomState(0)).reason
        == "mask has no background value 255"
    )
    (tmp_path / "b_coord.png").unlink()
    assert annotate_frame(prefix, "camera", SIZES, K, np.random.RandomState(0)).reason == "missing files: _coord.png"


def test_corrupt_png_names_the_file(tmp_path):
    prefix = str(tmp_path / "0000")
    _write_frame(prefix, [(1, 1, "02876657/botA", (5, 4, 25, 30))])
    (tmp_path / "0000_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataFormatError, match="0000_mask.png"):
        annotate_frame(prefix, "camera", SIZES, K, np.random.RandomState(0))


def test_test_label_matches_ground_truth_by_class_and_box(tmp_path):
    prefix = str(tmp_path / "0000")
    _write_frame(prefix, [(1, 6, "03797390/mugA", (5, 4, 25, 30)), (2, 1, "02876657/botA", (20, 35, 44, 60))])
    pose = np.diag([0.2, 0.2, 0.2, 1.0])
    pose[:3, 3] = [0.1, -0.05, 0.8]
    ground_truth = {
        "gt_class_ids": np.array([1, 6, 6]),
        "gt_bboxes": np.array([[20, 35, 44, 62], [0, 0, 9, 9], [5, 5, 27, 31]]),  # |Δ| = 2, far, 4
        "gt_RTs": np.stack([2 * pose, pose, 3 * pose]) * [1, 1, 1, 1],
        "handle_visibility": np.array([1, 1, 0]),
    }
    ground_truth["gt_RTs"][:, 3, 3] = 1
    extents = {"mugA": np.array([0.4, 0.5, 0.6]), "botA": np.array([0.3, 0.9, 0.3])}
    label = annotate_test_frame(prefix, "camera", SIZES, ground_truth, extents).label
    assert label["class_ids"].tolist() == [6, 1] and label["handle_visibility"].tolist() == [0, 1]
    np.testing.assert_allclose(label["scales"], [0.6, 0.4], rtol=1e-6)
    np.testing.assert_allclose(label["translations"], [[0.3, -0.15, 2.4], [0.2, -0.1, 1.6]], rtol=1e-6)
    np.testing.assert_allclose(label["rotations"], [np.eye(3)] * 2, atol=1e-6)
    np.testing.assert_array_equal(label["sizes"], [extents["mugA"], extents["botA"]])
    ground_truth["gt_bboxes"][2] = [5, 5, 30, 31]  # |Δ| = 7 > 5: the mug has no match any more
    result = annotate_test_frame(prefix, "camera", SIZES, ground_truth, extents)
    assert result.label is None and result.reason == "instance 1: no ground-truth match"
