"""3-D IoU of (prediction, gt) box pairs: the official NOCS IoU with its axis bug, and the axis-aligned one.

Both follow docs/metrics.md §3–§4. Box 1 is always the prediction, box 2 the gt. A pose is a 4×4 similarity
``[[s·R, t], [0, 0, 0, 1]]`` (camera from normalized object frame, metres); extents are the box sides in
the normalized object frame. Every function works on N pairs at once, in float64.
"""

from __future__ import annotations

import math

import numpy as np

from cleanpose.geometry import box_corners

__all__ = ["SYMMETRY_STEPS", "axis_aligned_iou", "nocs_iou", "transformed_box_corners"]

SYMMETRY_STEPS = 20
"""Rotations of the y-symmetric search: ``2π·i/20`` for i = 0..19 (docs/metrics.md §4.3)."""


def _y_rotations() -> np.ndarray:
    angles = 2 * math.pi * np.arange(SYMMETRY_STEPS) / float(SYMMETRY_STEPS)
    cos, sin = np.cos(angles), np.sin(angles)
    rotations = np.zeros((SYMMETRY_STEPS, 3, 3))
    rotations[:, 0, 0], rotations[:, 0, 2] = cos, sin
    rotations[:, 1, 1] = 1.0
    rotations[:, 2, 0], rotations[:, 2, 2] = -sin, cos
    return rotations


def transformed_box_corners(poses: np.ndarray, extents: np.ndarray) -> np.ndarray:
    """Corners of the boxes ``extents`` mapped to the camera by ``poses``.

    Args:
        poses: (..., 4, 4) float, camera from object, last row [0, 0, 0, 1].
        extents: (..., 3) float, box sides in the object frame.
    Returns:
        (..., 8, 3) float64 camera-frame corners, in the order of ``geometry.box_corners``.
    """
    poses = np.asarray(poses, dtype=np.float64)
    corners = box_corners(np.asarray(extents, dtype=np.float64))
    return corners @ np.swapaxes(poses[..., :3, :3], -1, -2) + poses[..., None, :3, 3]


_CORNER_SIGNS_T = box_corners(np.full(3, 2.0)).T.copy()  # (3, 8): column k = signs of corner k


def _corner_rows(linear: np.ndarray, translation: np.ndarray, extents: np.ndarray) -> np.ndarray:
    """(..., 3, 8) camera corners, rows x, y, z (the reference's 3×8 layout), as one matrix product."""
    half_columns = linear * (extents[..., None, :] / 2)  # column a of s·R scaled by e_a / 2
    shape = half_columns.shape[:-2]
    rows = (half_columns.reshape(-1, 3) @ _CORNER_SIGNS_T).reshape(*shape, 3, 8)
    return rows + translation[..., :, None]


def _intervals(corner_rows: np.ndarray, official: bool) -> tuple[np.ndarray, np.ndarray]:
    if official:  # the axis bug: per corner, min/max over its x, y, z
        x, y, z = corner_rows[..., 0, :], corner_rows[..., 1, :], corner_rows[..., 2, :]
        return np.minimum(np.minimum(x, y), z), np.maximum(np.maximum(x, y), z)
    return corner_rows.min(axis=-1), corner_rows.max(axis=-1)  # per camera axis, over the 8 corners


def _interval_iou(pred_lo, pred_hi, gt_lo, gt_hi) -> np.ndarray:
    # "Boxes" given by one interval per trailing entry; intersection 0 when any interval is disjoint.
    overlap = np.minimum(pred_hi, gt_hi) - np.maximum(pred_lo, gt_lo)
    intersection = np.where(overlap.min(axis=-1) < 0, 0.0, overlap.prod(axis=-1))
    union = (pred_hi - pred_lo).prod(axis=-1) + (gt_hi - gt_lo).prod(axis=-1) - intersection
    return intersection / union


def _searched_iou(pred_pose, pred_extents, gt_pose, gt_extents, symmetric, official: bool) -> np.ndarray:
    pred_pose = np.asarray(pred_pose, dtype=np.float64)
    gt_pose = np.asarray(gt_pose, dtype=np.float64)
    pred_extents = np.asarray(pred_extents, dtype=np.float64)
    gt_extents = np.asarray(gt_extents, dtype=np.float64)
    symmetric = np.asarray(symmetric, dtype=bool)
    num_pairs = len(pred_pose)
    if not (len(pred_extents) == len(gt_pose) == len(gt_extents) == len(symmetric) == num_pairs):
        raise ValueError("pred_pose, pred_extents, gt_pose, gt_extents and symmetric must have the same length")
    gt_lo, gt_hi = _intervals(_corner_rows(gt_pose[:, :3, :3], gt_pose[:, :3, 3], gt_extents), official)
    pred_lo, pred_hi = _intervals(_corner_rows(pred_pose[:, :3, :3], pred_pose[:, :3, 3], pred_extents), official)
    iou = _interval_iou(pred_lo, pred_hi, gt_lo, gt_hi)
    if symmetric.any():
        # P·Y(θ) for the 20 angles: rotate the prediction about its own y axis, i = 0 included
        linear = pred_pose[symmetric, None, :3, :3] @ _y_rotations()  # (S, 20, 3, 3)
        rows = _corner_rows(linear, pred_pose[symmetric, None, :3, 3], pred_extents[symmetric, None])
        lo, hi = _intervals(rows, official)
        candidates = _interval_iou(lo, hi, gt_lo[symmetric, None], gt_hi[symmetric, None])
        iou[symmetric] = np.maximum(0.0, candidates.max(axis=1))
    return iou


def nocs_iou(
    pred_pose: np.ndarray,
    pred_extents: np.ndarray,
    gt_pose: np.ndarray,
    gt_extents: np.ndarray,
    symmetric: np.ndarray,
) -> np.ndarray:
    """The official NOCS 3-D IoU, axis bug included (docs/metrics.md §4.2–4.3).

    For each corner k the official code takes ``hi_k = max(x_k, y_k, z_k)``, ``lo_k = min(...)`` — the
    max/min over the wrong axis — and intersects the resulting 8 intervals. For ``symmetric`` pairs the
    prediction is also rotated about its own y axis by ``2π·i/20`` (i = 0..19) and the largest IoU
    (at least 0) is kept. Not a volumetric IoU; kept because every NOCS-family paper reports it.

    Args:
        pred_pose: (N, 4, 4) float, prediction poses (camera from object; s·R, t in metres).
        pred_extents: (N, 3) float, prediction box sides, object frame.
        gt_pose: (N, 4, 4) float, gt poses.
        gt_extents: (N, 3) float, gt box sides.
        symmetric: (N,) bool, pairs that take the y-symmetric search.
    Returns:
        (N,) float64 IoU in [0, 1].
    """
    return _searched_iou(pred_pose, pred_extents, gt_pose, gt_extents, symmetric, official=True)


def axis_aligned_iou(
    pred_pose: np.ndarray,
    pred_extents: np.ndarray,
    gt_pose: np.ndarray,
    gt_extents: np.ndarray,
    symmetric: np.ndarray,
) -> np.ndarray:
    """IoU of the camera-frame axis-aligned bounding boxes of the two oriented boxes (docs/metrics.md §4.4).

    The corrected ("CATRE-style") IoU: per camera axis, ``lo``/``hi`` = min/max over the 8 transformed
    corners. Same y-symmetric search as ``nocs_iou``. Arguments and result as in ``nocs_iou``.
    """
    return _searched_iou(pred_pose, pred_extents, gt_pose, gt_extents, symmetric, official=False)
