"""Rotation and translation errors of (prediction, gt) pose pairs, as the official NOCS metric defines them.

docs/metrics.md §5. Poses are 4×4 similarities ``[[s·R, t], [0, 0, 0, 1]]`` (camera from object, metres),
decomposed with ``s = cbrt(det(s·R))``. Every function works on N pairs at once, in float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["official_rotation_error_deg", "translation_error_cm"]


def official_rotation_error_deg(pred_pose: np.ndarray, gt_pose: np.ndarray, y_symmetric: np.ndarray) -> np.ndarray:
    """Rotation error in degrees, with the official code's y-symmetric rule and NaN behaviour.

    * ``y_symmetric`` pairs: the angle between the two object y axes, ``arccos(a·b / (‖a‖‖b‖))`` with
      **no clipping**: when rounding pushes the cosine past ±1 the result is NaN, and NaN passes every
      rotation threshold in matching (a reference quirk we keep; docs/metrics.md §5).
    * other pairs: the geodesic angle ``arccos(clip((trace(R1 R2ᵀ) − 1)/2, −1, 1))``.

    Unlike ``cleanpose.geometry.rotation_error_deg`` this may return NaN.

    Args:
        pred_pose: (N, 4, 4) float, prediction poses.
        gt_pose: (N, 4, 4) float, gt poses.
        y_symmetric: (N,) bool, pairs compared through their y axes only.
    Returns:
        (N,) float64 degrees in [0, 180], or NaN.
    """
    pred_pose = np.asarray(pred_pose, dtype=np.float64)
    gt_pose = np.asarray(gt_pose, dtype=np.float64)
    y_symmetric = np.asarray(y_symmetric, dtype=bool)
    pred_rotation = pred_pose[:, :3, :3] / np.cbrt(np.linalg.det(pred_pose[:, :3, :3]))[:, None, None]
    gt_rotation = gt_pose[:, :3, :3] / np.cbrt(np.linalg.det(gt_pose[:, :3, :3]))[:, None, None]
    pred_y, gt_y = pred_rotation[:, :, 1], gt_rotation[:, :, 1]
    y_cos = (pred_y * gt_y).sum(axis=1) / (np.sqrt((pred_y * pred_y).sum(axis=1)) * np.sqrt((gt_y * gt_y).sum(axis=1)))
    trace = np.einsum("nij,nij->n", pred_rotation, gt_rotation)  # trace(R1 R2ᵀ)
    full_cos = np.clip((trace - 1) / 2, -1.0, 1.0)
    with np.errstate(invalid="ignore"):
        theta = np.arccos(np.where(y_symmetric, y_cos, full_cos))
    return theta * (180 / np.pi)


def translation_error_cm(pred_pose: np.ndarray, gt_pose: np.ndarray) -> np.ndarray:
    """Distance between the translations, ``‖t1 − t2‖ · 100``.

    Args:
        pred_pose: (N, 4, 4) float, translations in metres.
        gt_pose: (N, 4, 4) float.
    Returns:
        (N,) float64 centimetres.
    """
    pred_pose = np.asarray(pred_pose, dtype=np.float64)
    gt_pose = np.asarray(gt_pose, dtype=np.float64)
    return np.linalg.norm(pred_pose[:, :3, 3] - gt_pose[:, :3, 3], axis=1) * 100
