"""cleanpose.metrics.iou against hand-derived values and a per-pair float64 loop."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cleanpose.metrics.iou import axis_aligned_iou, nocs_iou, transformed_box_corners
from tests.metrics.test_evaluate import _pair_iou


def _pose(rotation, translation, scale):
    pose = np.eye(4)
    pose[:3, :3] = scale * rotation
    pose[:3, 3] = translation
    return pose


def test_identical_boxes_have_iou_one():
    pose = _pose(Rotation.from_rotvec([0.3, 0.5, -0.2]).as_matrix(), [0.1, -0.1, 1.0], 0.3)
    extents = np.array([[0.5, 0.6, 0.62]])
    for function in (nocs_iou, axis_aligned_iou):
        for symmetric in (False, True):
            assert function(pose[None], extents, pose[None], extents, [symmetric])[0] == pytest.approx(1.0)


def test_axis_aligned_iou_of_unit_cubes_shifted_along_x():
    gt = _pose(np.eye(3), [0.0, 0.0, 2.0], 1.0)
    pred = _pose(np.eye(3), [0.5, 0.0, 2.0], 1.0)
    cube = np.ones((1, 3))
    # overlap 0.5 × 1 × 1, union 1 + 1 − 0.5
    assert axis_aligned_iou(pred[None], cube, gt[None], cube, [False])[0] == pytest.approx(1 / 3)


def test_official_iou_axis_bug_hand_case():
    # Unit cubes at z = 2, the prediction shifted by d along z. Per corner k the official code uses the
    # interval [min(x_k, y_k), z_k] (z is the largest coordinate); only hi moves, by d, so
    # IoU = Π_k L_k / (L_k + d) with L_k = z_k − min(x_k, y_k) = (2, 1, 3, 2, 3, 2, 3, 2) in corner order.
    d = 0.1
    gt = _pose(np.eye(3), [0.0, 0.0, 2.0], 1.0)
    pred = _pose(np.eye(3), [0.0, 0.0, 2.0 + d], 1.0)
    lengths = [2, 1, 3, 2, 3, 2, 3, 2]
    expected = math.prod(length / (length + d) for length in lengths)
    cube = np.ones((1, 3))
    assert nocs_iou(pred[None], cube, gt[None], cube, [False])[0] == pytest.approx(expected, rel=1e-12)
    # the axis-aligned IoU of the same pair is the volumetric one: 0.9 / 1.1
    assert axis_aligned_iou(pred[None], cube, gt[None], cube, [False])[0] == pytest.approx(0.9 / 1.1)


def test_transformed_corners_follow_the_pose():
    rotation = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix()
    pose = _pose(rotation, [1.0, 2.0, 3.0], 2.0)
    corners = transformed_box_corners(pose, np.array([1.0, 2.0, 3.0]))
    local = np.array([0.5, 1.0, 1.5])  # corner 0 is (+, +, +)
    np.testing.assert_allclose(corners[0], 2.0 * rotation @ local + [1.0, 2.0, 3.0], atol=1e-12)


def test_matches_per_pair_loop_with_and_without_symmetry():
    rng = np.random.default_rng(0)
    count = 12
    rotations = Rotation.random(2 * count, random_state=np.random.default_rng(1)).as_matrix()
    gt = np.stack(
        [_pose(rotations[i], [rng.uniform(-0.1, 0.1), 0.0, 1.0], rng.uniform(0.1, 0.3)) for i in range(count)]
    )
    pred = np.stack(
        [
            _pose(
                rotations[count + i] if i % 3 == 0 else rotations[i],
                gt[i, :3, 3] + rng.normal(0, 0.02, 3),
                rng.uniform(0.1, 0.3),
            )
            for i in range(count)
        ]
    )
    pred_extents, gt_extents = rng.uniform(0.3, 1.0, (count, 3)), rng.uniform(0.3, 1.0, (count, 3))
    symmetric = np.arange(count) % 2 == 0
    for function, axis_aligned in ((nocs_iou, False), (axis_aligned_iou, True)):
        ours = function(pred, pred_extents, gt, gt_extents, symmetric)
        expected = [
            _pair_iou(
                pred[i].tolist(),
                pred_extents[i].tolist(),
                gt[i].tolist(),
                gt_extents[i].tolist(),
                bool(symmetric[i]),
                axis_aligned,
            )
            for i in range(count)
        ]
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)
        assert np.all(ours[symmetric] >= function(pred, pred_extents, gt, gt_extents, np.zeros(count, bool))[symmetric])
