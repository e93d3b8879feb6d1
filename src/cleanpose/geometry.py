"""Rotations, similarity transforms, boxes and pinhole-camera helpers (NumPy, and torch where marked).

Conventions, used everywhere in cleanpose:

* Column vectors. A rotation ``R`` maps object-frame vectors to camera-frame vectors: ``p = R @ q``.
* A pose with size is a similarity ``(R, t, s)``: ``p = s · R · q + t``, i.e. the 4×4 matrix
  ``[[s·R, t], [0, 0, 0, 1]]``. ``s`` > 0 is a scalar (metres), ``t`` is in metres.
* Camera frame: OpenCV (x right, y down, z forward = depth). Lengths are metres.
* Intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; pixel ``(u, v)`` = (column, row).
* Angles are radians unless the name says ``_deg``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from cleanpose.errors import DataFormatError

if TYPE_CHECKING:  # imported where used: the metrics and `cleanpose evaluate` need neither torch nor scipy
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "Similarity",
    "axis_angle_to_matrix",
    "backproject",
    "backproject_image",
    "box_corners",
    "decompose_similarity",
    "euler_xyz_to_matrix",
    "matrix_to_axis_angle",
    "ortho6d_to_rotation",
    "project_points",
    "ransac_umeyama",
    "remove_y_rotation",
    "rotation_error_deg",
    "similarity_matrix",
    "transform_points",
    "umeyama",
]

# Signs of (x, y, z) of the 8 box corners, in the order the official NOCS IoU pairs them (docs/metrics.md §3).
BOX_CORNER_SIGNS = np.array(
    [
        [+1, +1, +1],
        [+1, +1, -1],
        [-1, +1, +1],
        [-1, +1, -1],
        [+1, -1, +1],
        [+1, -1, -1],
        [-1, -1, +1],
        [-1, -1, -1],
    ],
    dtype=np.int8,
)


def _check_last_dims(name: str, array, shape: tuple[int, ...]) -> None:
    if array.ndim < len(shape) or tuple(array.shape[array.ndim - len(shape) :]) != shape:
        expected = "(..., " + ", ".join(str(d) for d in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}; got {tuple(array.shape)}")


# ---------------------------------------------------------------------------------------------------
# Rotations (torch)


def _normalize_rows(vectors: torch.Tensor) -> torch.Tensor:
    # The reference clamps the norm at 1e-8 rather than adding an epsilon (utils/rotation_utils.py).
    norm = vectors.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return vectors / norm


def ortho6d_to_rotation(r6: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from the 6-D representation of Zhou et al. (CVPR 2019), y-first variant.

    With ``a = r6[:, :3]`` and ``b = r6[:, 3:]``: ``y = b/‖b‖``, ``z = (a × y)/‖a × y‖``, ``x = y × z``,
    ``R = [x | y | z]`` (columns); norms are clamped below at 1e-8 (docs/model.md §10).

    Args:
        r6: (B, 6) float tensor, any device.
    Returns:
        (B, 3, 3) rotation matrices, same dtype/device as ``r6``.
    Raises:
        ValueError: if ``r6`` is not (B, 6).
    """
    import torch

    if r6.ndim != 2 or r6.shape[1] != 6:
        raise ValueError(f"r6 must have shape (B, 6); got {tuple(r6.shape)}")
    y_axis = _normalize_rows(r6[:, 3:])
    z_axis = _normalize_rows(torch.linalg.cross(r6[:, :3], y_axis, dim=1))
    x_axis = torch.linalg.cross(y_axis, z_axis, dim=1)
    return torch.stack((x_axis, y_axis, z_axis), dim=2)


def euler_xyz_to_matrix(angles_rad: torch.Tensor) -> torch.Tensor:
    """``Rx(α) · Ry(β) · Rz(γ)`` from angles ``(α, β, γ)``: standard right-handed elementary rotations.

    Args:
        angles_rad: (B, 3) float tensor, radians, columns (x, y, z).
    Returns:
        (B, 3, 3) rotation matrices, same dtype/device as the input.
    Raises:
        ValueError: if the input is not (B, 3).
    """
    import torch

    if angles_rad.ndim != 2 or angles_rad.shape[1] != 3:
        raise ValueError(f"angles_rad must have shape (B, 3); got {tuple(angles_rad.shape)}")
    cos, sin = angles_rad.cos(), angles_rad.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def stack(rows):
        return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)

    rot_x = stack([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    rot_y = stack([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rot_z = stack([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return rot_x @ rot_y @ rot_z


# ---------------------------------------------------------------------------------------------------
# Rotations (NumPy)


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rotation matrices from rotation vectors (unit axis × angle in radians, right-hand rule).

    Args:
        axis_angle: (..., 3) float.
    Returns:
        (..., 3, 3) float64.
    """
    from scipy.spatial.transform import Rotation

    axis_angle = np.asarray(axis_angle, dtype=np.float64)
    _check_last_dims("axis_angle", axis_angle, (3,))
    flat = Rotation.from_rotvec(axis_angle.reshape(-1, 3)).as_matrix()
    return flat.reshape(axis_angle.shape[:-1] + (3, 3))


def matrix_to_axis_angle(rotation: np.ndarray) -> np.ndarray:
    """Rotation vectors (axis × angle, angle in [0, π]) of rotation matrices.

    Args:
        rotation: (..., 3, 3) float, proper rotations.
    Returns:
        (..., 3) float64, radians.
    """
    from scipy.spatial.transform import Rotation

    rotation = np.asarray(rotation, dtype=np.float64)
    _check_last_dims("rotation", rotation, (3, 3))
    flat = Rotation.from_matrix(rotation.reshape(-1, 3, 3)).as_rotvec()
    return flat.reshape(rotation.shape[:-2] + (3,))


def rotation_error_deg(rotation_1: np.ndarray, rotation_2: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations, ``arccos((trace(R1 R2ᵀ) − 1)/2)`` in degrees.

    The cosine is clamped to [−1, 1] (unlike the official NOCS metric, see ``cleanpose.metrics``).

    Args:
        rotation_1: (..., 3, 3) float.
        rotation_2: (..., 3, 3) float, broadcastable with ``rotation_1``.
    Returns:
        (...) float64 degrees in [0, 180].
    """
    rotation_1 = np.asarray(rotation_1, dtype=np.float64)
    rotation_2 = np.asarray(rotation_2, dtype=np.float64)
    _check_last_dims("rotation_1", rotation_1, (3, 3))
    _check_last_dims("rotation_2", rotation_2, (3, 3))
    trace = np.einsum("...ij,...ij->...", rotation_1, rotation_2)  # trace(R1 R2ᵀ)
    cos = np.clip((trace - 1.0) / 2.0, -1.0, 1.0)  # rounding can push the cosine just past ±1
    return np.degrees(np.arccos(cos))


def remove_y_rotation(rotation: np.ndarray) -> np.ndarray:
    """Canonical representative of ``R · Ry(θ)`` for objects symmetric about their y axis.

    With ``a = R00 + R22``, ``b = R02 − R20``, ``r = √(a² + b²)`` and
    ``S = [[a/r, 0, −b/r], [0, 1, 0], [b/r, 0, a/r]]`` returns ``R · S`` (docs/data_formats.md §3.6); the
    y column is unchanged and the result no longer depends on a rotation about the object y axis.
    Where ``r = 0`` (the x–z block has no defined y angle) ``R`` is returned unchanged; the reference
    divides by zero there and returns NaN.

    Args:
        rotation: (..., 3, 3) float rotations.
    Returns:
        (..., 3, 3), same dtype as the input (float64 for integer input).
    """
    rotation = np.asarray(rotation)
    _check_last_dims("rotation", rotation, (3, 3))
    if not np.issubdtype(rotation.dtype, np.floating):
        rotation = rotation.astype(np.float64)
    a = rotation[..., 0, 0] + rotation[..., 2, 2]
    b = rotation[..., 0, 2] - rotation[..., 2, 0]
    r = np.sqrt(a * a + b * b)
    defined = r > 0
    safe_r = np.where(defined, r, 1.0)
    cos = np.where(defined, a / safe_r, 1.0)
    sin = np.where(defined, b / safe_r, 0.0)
    canonicalizer = np.zeros(rotation.shape, dtype=rotation.dtype)
    canonicalizer[..., 0, 0] = cos
    canonicalizer[..., 0, 2] = -sin
    canonicalizer[..., 1, 1] = 1.0
    canonicalizer[..., 2, 0] = sin
    canonicalizer[..., 2, 2] = cos
    return rotation @ canonicalizer


# ---------------------------------------------------------------------------------------------------
# Similarity transforms


class Similarity(NamedTuple):
    """A similarity ``p = scale · rotation · q + translation``."""

    rotation: np.ndarray
    """(3, 3) float64 proper rotation (or (..., 3, 3) for a batch)."""
    translation: np.ndarray
    """(3,) float64, metres (or (..., 3))."""
    scale: float
    """> 0 (a float; a (...,) array for a batch)."""


def similarity_matrix(rotation: np.ndarray, translation: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The 4×4 homogeneous matrix ``[[s·R, t], [0, 0, 0, 1]]``.

    Args:
        rotation: (3, 3) float.
        translation: (3,) float, metres.
        scale: scalar.
    Returns:
        (4, 4) float64.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    translation = np.asarray(translation, dtype=np.float64)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation must have shape (3, 3); got {rotation.shape}")
    if translation.shape != (3,):
        raise ValueError(f"translation must have shape (3,); got {translation.shape}")
    matrix = np.eye(4)
    matrix[:3, :3] = float(scale) * rotation
    matrix[:3, 3] = translation
    return matrix


def decompose_similarity(matrix: np.ndarray) -> Similarity:
    """Split ``[[s·R, t], [0, 0, 0, 1]]`` into ``(R, t, s)`` with ``s = cbrt(det(s·R))``, ``R = sR / s``.

    This is the decomposition of the official NOCS metric (docs/metrics.md §3); no orthonormality check.

    Args:
        matrix: (4, 4) or (..., 4, 4) float.
    Returns:
        ``Similarity`` in float64; ``scale`` is a float for one matrix, a (...,) array for a batch.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    _check_last_dims("matrix", matrix, (4, 4))
    linear = matrix[..., :3, :3]
    scale = np.cbrt(np.linalg.det(linear))
    rotation = linear / scale[..., None, None]
    translation = matrix[..., :3, 3].copy()
    if matrix.ndim == 2:
        scale = float(scale)
    return Similarity(rotation, translation, scale)


def transform_points(
    points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """Apply ``p = s · R · q + t`` to each row ``q`` of ``points``.

    Args:
        points: (N, 3) float.
        rotation: (3, 3) float.
        translation: (3,) float.
        scale: scalar.
    Returns:
        (N, 3), dtype promoted from the inputs.
    """
    points = np.asarray(points)
    _check_last_dims("points", points, (3,))
    rotation = np.asarray(rotation)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation must have shape (3, 3); got {rotation.shape}")
    return scale * (points @ rotation.T) + np.asarray(translation)


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Similarity:
    """Least-squares similarity mapping ``source`` onto ``target`` (Umeyama, TPAMI 1991).

    Minimises ``Σ ‖target_i − (s·R·source_i + t)‖²`` over proper rotations R (a reflection in the
    SVD is corrected by flipping the last singular direction), ``s`` (fixed to 1 unless
    ``with_scale``) and ``t``. Computed in float64.

    Args:
        source: (N, 3) float, N ≥ 1.
        target: (N, 3) float.
        with_scale: estimate the scale; otherwise ``s = 1``.
    Returns:
        ``Similarity`` (float64 rotation and translation, float scale).
    Raises:
        DataFormatError: shapes differ, values are not finite, or ``source`` has zero spread
            while a scale is requested.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape[1] != 3 or source.shape != target.shape or len(source) == 0:
        raise DataFormatError(
            f"umeyama: source and target must both be (N, 3) with N >= 1; got {source.shape} and {target.shape}"
        )
    if not (np.isfinite(source).all() and np.isfinite(target).all()):
        raise DataFormatError("umeyama: source or target contains NaN or inf")
    similarity = _umeyama_unchecked(source, target, with_scale)
    if similarity is None:
        raise DataFormatError("umeyama: the source points all coincide; the scale is undefined")
    return similarity


def _umeyama_unchecked(source: np.ndarray, target: np.ndarray, with_scale: bool) -> Similarity | None:
    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    source_centered = source - source_mean
    target_centered = target - target_mean
    covariance = target_centered.T @ source_centered / len(source)
    left, singular, right_t = np.linalg.svd(covariance)
    if np.linalg.det(left) * np.linalg.det(right_t) < 0.0:
        singular = singular * np.array([1.0, 1.0, -1.0])
        left = left * np.array([1.0, 1.0, -1.0])
    rotation = left @ right_t
    scale = 1.0
    if with_scale:
        source_variance = (source_centered**2).sum() / len(source)
        if not source_variance > 0.0:
            return None
        scale = float(singular.sum() / source_variance)
    translation = target_mean - scale * (rotation @ source_mean)
    return Similarity(rotation, translation, scale)


def ransac_umeyama(
    source: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator,
    *,
    max_iterations: int = 128,
    sample_size: int = 5,
    inlier_fraction: float = 0.1,
    confidence: float = 0.99,
    min_inlier_ratio: float = 0.1,
) -> Similarity:
    """Robust similarity ``source → target``: RANSAC over Umeyama fits, then a refit on the inliers.

    The procedure of the NOCS/DPDN label generator (docs/data_formats.md §2.3 step 10):

    * ``diameter = 2 · max_i ‖source_i − mean(source)‖``.
    * Iteration ``i = 0, 1, …, max_iterations − 1``: draw ``sample_size`` indices with replacement,
      fit (R, t, s) to them; inliers are the points with ``‖target − (s·R·source + t)‖ <
      inlier_fraction · diameter · s`` (strict); keep the inlier set if its ratio beats the best so
      far (strictly); stop after iteration ``i`` once ``1 − (1 − best⁵)^i > confidence``.
    * Fail if the best ratio is below ``min_inlier_ratio``; otherwise refit on the best inlier set.

    A degenerate draw (all chosen source points equal) counts as an iteration with no inliers.

    Args:
        source: (N, 3) float, e.g. NOCS coordinates (normalized object frame).
        target: (N, 3) float, e.g. back-projected camera points.
        rng: source of the index draws.
        max_iterations: iteration cap (128 in the reference).
        sample_size: indices per hypothesis (5).
        inlier_fraction: inlier radius as a fraction of the source diameter (0.1).
        confidence: early-stop confidence (0.99).
        min_inlier_ratio: smallest acceptable best inlier ratio (0.1).
    Returns:
        ``Similarity`` of the final refit (float64).
    Raises:
        DataFormatError: bad shapes or non-finite values, or the best inlier ratio is below
            ``min_inlier_ratio`` (the message gives the ratio).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape[1] != 3 or source.shape != target.shape or len(source) == 0:
        raise DataFormatError(
            f"ransac_umeyama: source and target must both be (N, 3) with N >= 1; got {source.shape} and {target.shape}"
        )
    if not (np.isfinite(source).all() and np.isfinite(target).all()):
        raise DataFormatError("ransac_umeyama: source or target contains NaN or inf")
    num_points = len(source)
    diameter = 2.0 * np.linalg.norm(source - source.mean(axis=0), axis=1).max()
    best_ratio = 0.0
    best_inliers = np.arange(num_points)
    for iteration in range(max_iterations):
        indices = rng.integers(0, num_points, size=sample_size)
        hypothesis = _umeyama_unchecked(source[indices], target[indices], with_scale=True)
        if hypothesis is not None:
            predicted = hypothesis.scale * (source @ hypothesis.rotation.T) + hypothesis.translation
            residual = np.linalg.norm(target - predicted, axis=1)
            inliers = np.flatnonzero(residual < inlier_fraction * diameter * hypothesis.scale)
            ratio = len(inliers) / num_points
            if ratio > best_ratio:
                best_ratio, best_inliers = ratio, inliers
        if 1.0 - (1.0 - best_ratio**5) ** iteration > confidence:
            break
    if best_ratio < min_inlier_ratio:
        raise DataFormatError(
            f"ransac_umeyama: alignment failed, best inlier ratio {best_ratio:.3f} < {min_inlier_ratio}"
        )
    refit = _umeyama_unchecked(source[best_inliers], target[best_inliers], with_scale=True)
    if refit is None:
        raise DataFormatError("ransac_umeyama: the inlier source points all coincide")
    return refit


# ---------------------------------------------------------------------------------------------------
# Boxes and cameras


def box_corners(extents: np.ndarray) -> np.ndarray:
    """The 8 corners ``(±ex/2, ±ey/2, ±ez/2)`` of boxes centred at the origin.

    Order of the (x, y, z) signs:
    ``(+,+,+) (+,+,−) (−,+,+) (−,+,−) (+,−,+) (+,−,−) (−,−,+) (−,−,−)``,
    the order in which the official NOCS IoU pairs corners (docs/metrics.md §3).

    Args:
        extents: (..., 3) float, box side lengths (x, y, z).
    Returns:
        (..., 8, 3), same float dtype as ``extents`` (float64 for integer input).
    """
    extents = np.asarray(extents)
    _check_last_dims("extents", extents, (3,))
    if not np.issubdtype(extents.dtype, np.floating):
        extents = extents.astype(np.float64)
    half = extents[..., None, :] / 2
    return half * BOX_CORNER_SIGNS.astype(extents.dtype)


def _check_intrinsics(intrinsics) -> np.ndarray:
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if intrinsics.shape != (3, 3):
        raise ValueError(f"intrinsics must have shape (3, 3); got {intrinsics.shape}")
    return intrinsics


def backproject(
    depth_m: np.ndarray, intrinsics: np.ndarray, mask: np.ndarray, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Lift the masked pixels with valid depth to 3-D camera points.

    ``x = (u − cx)·z/fx``, ``y = (v − cy)·z/fy``, ``z = depth`` with ``u`` = column, ``v`` = row;
    computed in float64, returned as float32.

    Args:
        depth_m: (H, W) float, metres; 0 (or less) marks missing depth.
        intrinsics: (3, 3) float, pixels, OpenCV convention.
        mask: (H, W) bool, True on the object.
        origin: image (row, column) of ``depth_m[0, 0]`` when the arrays are a crop of the image.
    Returns:
        (M, 3) float32, metres, camera frame; M = mask pixels with depth > 0, in row-major order.
    """
    depth_m = np.asarray(depth_m)
    mask = np.asarray(mask, dtype=bool)
    if depth_m.ndim != 2 or mask.shape != depth_m.shape:
        raise ValueError(f"depth_m must be (H, W) and mask the same shape; got {depth_m.shape} and {mask.shape}")
    intrinsics = _check_intrinsics(intrinsics)
    rows, cols = np.nonzero(mask & (depth_m > 0))
    depth = depth_m[rows, cols].astype(np.float64)
    rows, cols = rows + origin[0], cols + origin[1]
    x = (cols - intrinsics[0, 2]) * depth / intrinsics[0, 0]
    y = (rows - intrinsics[1, 2]) * depth / intrinsics[1, 1]
    return np.stack((x, y, depth), axis=1).astype(np.float32)


def backproject_image(depth_m: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Camera point of every pixel (a zero-depth pixel gives the origin).

    Args:
        depth_m: (H, W) float, metres.
        intrinsics: (3, 3) float, pixels, OpenCV convention.
    Returns:
        (H, W, 3) float32, metres, camera frame; ``[v, u] = (x, y, z)`` of pixel column u, row v.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth_m must have shape (H, W); got {depth_m.shape}")
    intrinsics = _check_intrinsics(intrinsics)
    height, width = depth_m.shape
    depth = depth_m.astype(np.float64)
    x = (np.arange(width)[None, :] - intrinsics[0, 2]) * depth / intrinsics[0, 0]
    y = (np.arange(height)[:, None] - intrinsics[1, 2]) * depth / intrinsics[1, 1]
    return np.stack((x, y, depth), axis=2).astype(np.float32)


def project_points(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pinhole projection ``(u, v) = (K p)[:2] / (K p)[2]``.

    Args:
        points: (N, 3) float, metres, camera frame, z > 0.
        intrinsics: (3, 3) float, pixels.
    Returns:
        (N, 2) float64 pixel coordinates (u = column, v = row).
    """
    points = np.asarray(points, dtype=np.float64)
    _check_last_dims("points", points, (3,))
    homogeneous = points @ _check_intrinsics(intrinsics).T
    return homogeneous[..., :2] / homogeneous[..., 2:3]
