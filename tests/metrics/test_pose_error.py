"""cleanpose.metrics.pose_error against scipy angles and the NaN rule of docs/metrics.md §5."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cleanpose.metrics.pose_error import official_rotation_error_deg, translation_error_cm
from tests.metrics.test_evaluate import _pose_errors


def _poses(rotations, translations, scales):
    poses = np.tile(np.eye(4), (len(rotations), 1, 1))
    poses[:, :3, :3] = np.asarray(scales)[:, None, None] * rotations
    poses[:, :3, 3] = translations
    return poses


def test_non_symmetric_error_is_geodesic_angle():
    first = Rotation.random(8, random_state=np.random.default_rng(0))
    second = Rotation.random(8, random_state=np.random.default_rng(1))
    expected = np.degrees((first * second.inv()).magnitude())
    pred = _poses(first.as_matrix(), np.zeros((8, 3)), np.full(8, 0.3))
    gt = _poses(second.as_matrix(), np.zeros((8, 3)), np.full(8, 1.7))  # scales differ: removed by cbrt(det)
    np.testing.assert_allclose(official_rotation_error_deg(pred, gt, np.zeros(8, bool)), expected, atol=1e-9)


def test_symmetric_error_is_angle_between_y_axes():
    tilt = Rotation.from_rotvec([np.radians(12.0), 0, 0])
    spin = Rotation.from_rotvec([0, np.radians(77.0), 0])
    base = Rotation.from_rotvec([0.2, -0.4, 0.1])
    pred = _poses(np.stack([(base * spin).as_matrix(), (base * tilt * spin).as_matrix()]), np.zeros((2, 3)), [0.2, 0.2])
    gt = _poses(np.stack([base.as_matrix()] * 2), np.zeros((2, 3)), [0.2, 0.2])
    errors = official_rotation_error_deg(pred, gt, np.array([True, True]))
    assert errors[0] < 1e-5 or np.isnan(errors[0])  # pure spin about y: 0, or NaN when cos rounds past 1
    assert errors[1] == pytest.approx(12.0, abs=1e-9)
    assert official_rotation_error_deg(pred, gt, np.array([False, False]))[0] == pytest.approx(77.0, abs=1e-9)


def test_symmetric_cosine_is_not_clipped_nan_pattern_matches_literal_formula():
    # y axes equal up to rounding: the official code gets arccos(1 + ε) = NaN for some of these
    rotations = Rotation.random(200, random_state=np.random.default_rng(2)).as_matrix()
    spins = Rotation.from_rotvec(np.outer(np.random.default_rng(3).uniform(-3, 3, 200), [0, 1, 0])).as_matrix()
    pred = _poses(rotations @ spins, np.zeros((200, 3)), np.full(200, 0.25))
    gt = _poses(rotations, np.zeros((200, 3)), np.full(200, 0.25))
    ours = official_rotation_error_deg(pred, gt, np.ones(200, bool))
    expected = np.array([_pose_errors(pred[i].tolist(), gt[i].tolist(), True)[0] for i in range(200)])
    assert np.isnan(ours).any() and not np.isnan(ours).all()  # no clipping: NaN does occur
    # Which pairs round past ±1 depends on the last bit of det/cbrt; NaN and ~0 both pass every limit.
    # The literal formula agrees wherever it is defined, and says ~0 wherever ours is NaN.
    both = ~np.isnan(ours) & ~np.isnan(expected)
    np.testing.assert_allclose(ours[both], expected[both], atol=1e-5)
    assert np.all(np.nan_to_num(ours, nan=0.0) < 1e-5) and np.all(np.nan_to_num(expected, nan=0.0) < 1e-5)


def test_translation_error_in_centimetres():
    pred = _poses(np.stack([np.eye(3)] * 2), [[0.0, 0.0, 1.0], [0.03, 0.04, 1.0]], [1.0, 1.0])
    gt = _poses(np.stack([np.eye(3)] * 2), [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], [2.0, 2.0])
    np.testing.assert_allclose(translation_error_cm(pred, gt), [0.0, 5.0], atol=1e-12)
