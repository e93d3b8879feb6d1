"""Tests of cleanpose.geometry against independent oracles (scipy, OpenCV, float64 loops, hand cases)."""

import math

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cleanpose import geometry
from cleanpose.errors import DataFormatError


def _random_rotations(rng: np.random.Generator, count: int) -> np.ndarray:
    return Rotation.random(count, random_state=np.random.default_rng(rng.integers(1 << 31))).as_matrix()


def _rot_y(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])


# --- ortho6d -----------------------------------------------------------------------------------------


def _ortho6d_loop(row):
    """Plain-Python float64 oracle of docs/model.md §10."""

    def normalize(v):
        norm = max(math.sqrt(sum(c * c for c in v)), 1e-8)
        return [c / norm for c in v]

    def cross(u, v):
        return [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]

    a, b = list(row[:3]), list(row[3:])
    y = normalize(b)
    z = normalize(cross(a, y))
    x = cross(y, z)
    return [[x[i], y[i], z[i]] for i in range(3)]


def test_ortho6d_matches_loop_oracle_and_is_rotation():
    generator = torch.Generator().manual_seed(0)
    r6 = torch.randn(7, 6, generator=generator, dtype=torch.float64)
    r6[6, 3:] = 0.0  # degenerate b: the 1e-8 clamp keeps it finite (all zeros)
    rotation = geometry.ortho6d_to_rotation(r6)
    assert rotation.dtype == torch.float64 and rotation.shape == (7, 3, 3)
    expected = torch.tensor([_ortho6d_loop(row.tolist()) for row in r6], dtype=torch.float64)
    torch.testing.assert_close(rotation, expected, rtol=0, atol=1e-12)
    proper = rotation[:6]
    torch.testing.assert_close(proper @ proper.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(6, 3, 3))
    torch.testing.assert_close(torch.linalg.det(proper), torch.ones(6, dtype=torch.float64))


def test_ortho6d_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"r6 must have shape \(B, 6\); got \(3, 5\)"):
        geometry.ortho6d_to_rotation(torch.zeros(3, 5))


# --- Euler ------------------------------------------------------------------------------------------


def test_euler_xyz_matches_scipy_intrinsic_xyz():
    rng = np.random.default_rng(1)
    angles = rng.uniform(-math.pi, math.pi, size=(5, 3))
    matrices = geometry.euler_xyz_to_matrix(torch.from_numpy(angles))
    expected = Rotation.from_euler("XYZ", angles).as_matrix()  # intrinsic XYZ = Rx·Ry·Rz
    np.testing.assert_allclose(matrices.numpy(), expected, atol=1e-12)


def test_euler_xyz_hand_case_quarter_turn_about_z():
    matrix = geometry.euler_xyz_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=torch.float64))[0]
    np.testing.assert_allclose(matrix.numpy(), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


# --- axis-angle and rotation error -------------------------------------------------------------------


def test_axis_angle_matches_opencv_rodrigues_and_round_trips():
    rng = np.random.default_rng(2)
    axis_angle = rng.normal(size=(2, 3, 3))
    matrices = geometry.axis_angle_to_matrix(axis_angle)
    assert matrices.shape == (2, 3, 3, 3)
    for index in np.ndindex(2, 3):
        expected, _ = cv2.Rodrigues(axis_angle[index])
        np.testing.assert_allclose(matrices[index], expected, atol=1e-12)
    recovered = geometry.matrix_to_axis_angle(matrices)
    np.testing.assert_allclose(geometry.axis_angle_to_matrix(recovered), matrices, atol=1e-12)
    angles = np.linalg.norm(recovered, axis=-1)
    assert np.all(angles <= math.pi + 1e-12)


def test_axis_angle_hand_case():
    matrix = geometry.axis_angle_to_matrix(np.array([0.0, 0.0, math.pi / 2]))
    np.testing.assert_allclose(matrix, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(geometry.matrix_to_axis_angle(_rot_y(0.3)), [0.0, 0.3, 0.0], atol=1e-12)


def test_rotation_error_deg_matches_scipy_and_clamps():
    rng = np.random.default_rng(3)
    first, second = _random_rotations(rng, 6), _random_rotations(rng, 6)
    expected = np.degrees((Rotation.from_matrix(first) * Rotation.from_matrix(second).inv()).magnitude())
    np.testing.assert_allclose(geometry.rotation_error_deg(first, second), expected, atol=1e-9)
    # identical rotations: the cosine may round above 1; the clamp gives exactly 0, never NaN
    assert np.all(geometry.rotation_error_deg(first, first) < 1e-5)
    assert geometry.rotation_error_deg(np.eye(3), _rot_y(math.radians(37.0))) == pytest.approx(37.0)


# --- symmetry canonicalization ------------------------------------------------------------------------


def test_remove_y_rotation_is_invariant_to_rotation_about_y():
    rng = np.random.default_rng(4)
    rotations = _random_rotations(rng, 5)
    canonical = geometry.remove_y_rotation(rotations)
    for angle in (0.4, -2.0, 3.0):
        spun = rotations @ _rot_y(angle)
        np.testing.assert_allclose(geometry.remove_y_rotation(spun), canonical, atol=1e-12)
    np.testing.assert_allclose(canonical[..., :, 1], rotations[..., :, 1], atol=1e-12)  # y column kept
    np.testing.assert_allclose(
        canonical @ canonical.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12
    )
    # the canonical member has no residual y-angle: b = R02 − R20 = 0 and a = R00 + R22 > 0
    np.testing.assert_allclose(canonical[:, 0, 2] - canonical[:, 2, 0], 0.0, atol=1e-12)
    assert np.all(canonical[:, 0, 0] + canonical[:, 2, 2] > 0)


def test_remove_y_rotation_hand_cases():
    np.testing.assert_allclose(geometry.remove_y_rotation(_rot_y(1.1)), np.eye(3), atol=1e-12)
    flipped = np.diag([1.0, -1.0, -1.0])  # a = 0, b = 0: y angle undefined, returned unchanged
    np.testing.assert_array_equal(geometry.remove_y_rotation(flipped), flipped)


# --- similarity transforms ---------------------------------------------------------------------------


def test_similarity_matrix_decompose_and_transform_points_agree():
    rng = np.random.default_rng(5)
    rotation = _random_rotations(rng, 1)[0]
    translation = rng.normal(size=3)
    scale = 0.37
    matrix = geometry.similarity_matrix(rotation, translation, scale)
    np.testing.assert_array_equal(matrix[3], [0, 0, 0, 1])
    decomposed = geometry.decompose_similarity(matrix)
    np.testing.assert_allclose(decomposed.rotation, rotation, atol=1e-12)
    np.testing.assert_allclose(decomposed.translation, translation, atol=1e-15)
    assert decomposed.scale == pytest.approx(scale, abs=1e-14) and isinstance(decomposed.scale, float)
    points = rng.normal(size=(4, 3))
    homogeneous = np.concatenate([points, np.ones((4, 1))], axis=1) @ matrix.T
    np.testing.assert_allclose(
        geometry.transform_points(points, rotation, translation, scale), homogeneous[:, :3], atol=1e-12
    )
    batch = geometry.decompose_similarity(np.stack([matrix, matrix]))
    np.testing.assert_allclose(batch.scale, [scale, scale], atol=1e-14)


def _kabsch_oracle(source, target):
    source_centered = source - source.mean(axis=0)
    target_centered = target - target.mean(axis=0)
    rotation = Rotation.align_vectors(target_centered, source_centered)[0].as_matrix()
    scale = np.sum((source_centered @ rotation.T) * target_centered) / np.sum(source_centered**2)
    return rotation, scale, target.mean(axis=0) - scale * rotation @ source.mean(axis=0)


def test_umeyama_exact_recovery_and_noisy_least_squares():
    rng = np.random.default_rng(6)
    rotation = _random_rotations(rng, 1)[0]
    translation, scale = rng.normal(size=3), 2.5
    source = rng.normal(size=(30, 3))
    target = geometry.transform_points(source, rotation, translation, scale)
    fit = geometry.umeyama(source, target)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-10)
    np.testing.assert_allclose(fit.translation, translation, atol=1e-10)
    assert fit.scale == pytest.approx(scale, rel=1e-12)
    noisy = target + rng.normal(scale=0.05, size=target.shape)
    fit = geometry.umeyama(source, noisy)
    expected_rotation, expected_scale, expected_translation = _kabsch_oracle(source, noisy)
    np.testing.assert_allclose(fit.rotation, expected_rotation, atol=1e-9)
    assert fit.scale == pytest.approx(expected_scale, rel=1e-9)
    np.testing.assert_allclose(fit.translation, expected_translation, atol=1e-9)
    rigid = geometry.umeyama(source, noisy, with_scale=False)
    assert rigid.scale == 1.0
    np.testing.assert_allclose(rigid.rotation, expected_rotation, atol=1e-9)


def test_umeyama_returns_proper_rotation_for_mirrored_target():
    rng = np.random.default_rng(7)
    source = rng.normal(size=(20, 3))
    mirrored = source * np.array([1.0, 1.0, -1.0])
    fit = geometry.umeyama(source, mirrored)
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)
    expected_rotation, expected_scale, _ = _kabsch_oracle(source, mirrored)
    np.testing.assert_allclose(fit.rotation, expected_rotation, atol=1e-9)
    assert fit.scale == pytest.approx(expected_scale, rel=1e-9)


def test_umeyama_errors():
    with pytest.raises(DataFormatError, match=r"must both be \(N, 3\).*got \(4, 3\) and \(5, 3\)"):
        geometry.umeyama(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(DataFormatError, match="all coincide"):
        geometry.umeyama(np.ones((4, 3)), np.zeros((4, 3)))
    with pytest.raises(DataFormatError, match="NaN or inf"):
        geometry.umeyama(np.full((4, 3), np.nan), np.zeros((4, 3)))


def test_ransac_umeyama_ignores_outliers_and_is_reproducible():
    rng = np.random.default_rng(8)
    rotation = _random_rotations(rng, 1)[0]
    translation, scale = np.array([0.1, -0.05, 0.8]), 0.2
    source = rng.uniform(-0.5, 0.5, size=(200, 3))
    target = geometry.transform_points(source, rotation, translation, scale)
    outliers = rng.choice(200, size=60, replace=False)
    target[outliers] += rng.uniform(0.3, 1.0, size=(60, 3))  # far beyond 0.1 × diameter × s
    fit = geometry.ransac_umeyama(source, target, np.random.default_rng(0))
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(fit.translation, translation, atol=1e-9)
    assert fit.scale == pytest.approx(scale, rel=1e-9)
    again = geometry.ransac_umeyama(source, target, np.random.default_rng(0))
    np.testing.assert_array_equal(again.rotation, fit.rotation)


def test_ransac_umeyama_fails_on_unrelated_points():
    rng = np.random.default_rng(9)
    source = rng.uniform(-0.5, 0.5, size=(400, 3))
    target = rng.uniform(-50, 50, size=(400, 3))
    with pytest.raises(DataFormatError, match=r"alignment failed, best inlier ratio 0\.\d+ < 0\.1"):
        geometry.ransac_umeyama(source, target, np.random.default_rng(1))


# --- boxes and cameras -------------------------------------------------------------------------------


def test_box_corners_order_hand_case():
    corners = geometry.box_corners(np.array([2.0, 4.0, 6.0], dtype=np.float32))
    assert corners.dtype == np.float32
    expected = [
        [1, 2, 3], [1, 2, -3], [-1, 2, 3], [-1, 2, -3],
        [1, -2, 3], [1, -2, -3], [-1, -2, 3], [-1, -2, -3],
    ]  # fmt: skip
    np.testing.assert_array_equal(corners, expected)
    batch = geometry.box_corners(np.array([[2.0, 4.0, 6.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_array_equal(batch[1], np.array(expected) / np.array([2.0, 4.0, 6.0]))


def _intrinsics():
    return np.array([[500.0, 0.0, 3.2], [0.0, 480.0, 2.1], [0.0, 0.0, 1.0]])


def test_backproject_matches_pixel_loop():
    rng = np.random.default_rng(10)
    depth = rng.uniform(0.3, 1.5, size=(5, 7)).astype(np.float32)
    depth[1, 2] = 0.0
    mask = rng.random((5, 7)) > 0.4
    mask[1, 2] = True
    intrinsics = _intrinsics()
    points = geometry.backproject(depth, intrinsics, mask)
    expected = []
    for row in range(5):
        for col in range(7):
            if mask[row, col] and depth[row, col] > 0:
                z = float(depth[row, col])
                expected.append([(col - 3.2) * z / 500.0, (row - 2.1) * z / 480.0, z])
    assert points.dtype == np.float32
    np.testing.assert_allclose(points, np.array(expected), rtol=1e-6)
    image = geometry.backproject_image(depth, intrinsics)
    assert image.dtype == np.float32 and image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image[mask & (depth > 0)], points)


def test_project_points_inverts_backprojection():
    depth = np.full((4, 6), 0.75, dtype=np.float32)
    points = geometry.backproject(depth, _intrinsics(), np.ones((4, 6), dtype=bool))
    pixels = geometry.project_points(points, _intrinsics())
    rows, cols = np.nonzero(np.ones((4, 6), dtype=bool))
    np.testing.assert_allclose(pixels, np.stack([cols, rows], axis=1), atol=1e-5)


def test_shape_errors_print_shape():
    with pytest.raises(ValueError, match=r"extents must have shape \(\.\.\., 3\); got \(4, 2\)"):
        geometry.box_corners(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"intrinsics must have shape \(3, 3\); got \(2, 3\)"):
        geometry.project_points(np.ones((1, 3)), np.ones((2, 3)))
