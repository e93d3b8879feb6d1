"""Greedy matching of predictions to gts inside one (image, class) group, for many thresholds at once.

metrics.md §6. Each function takes a batch of B groups padded to P predictions and G gts; the
predictions are already in processing order (score descending, ties: later stored first, §6.3) and the
gts in stored order. Every threshold is matched independently; the loop runs over the P prediction
slots only, everything else is vectorized over groups, thresholds and gts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["match_by_iou", "match_by_pose"]


def match_by_iou(
    iou: np.ndarray,
    pred_valid: np.ndarray,
    gt_valid: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """IoU matching of the official metric (§6.1).

    Each prediction, in order, takes the still unmatched gt of highest IoU (ties: the higher gt index)
    if that IoU is strictly greater than the threshold; otherwise it stays unmatched. This is the net
    effect of the reference's walk (stop below τ, skip matched gts, never match at equality).

    Args:
        iou: (B, P, G) float, IoU of prediction slot p with gt slot g; compared in float64.
        pred_valid: (B, P) bool, False for padding slots.
        gt_valid: (B, G) bool, False for padding slots.
        thresholds: (T,) float IoU thresholds τ.
    Returns:
        ``(pred_matched, gt_matched)``: (B, T, P) and (B, T, G) bool; ``pred_matched[b, t, p]`` is True
        when prediction p of group b matched some gt at threshold ``thresholds[t]``.
    """
    num_groups, num_preds, num_gts = iou.shape
    thresholds = np.asarray(thresholds, dtype=np.float64)
    iou = np.where(pred_valid[:, :, None] & gt_valid[:, None, :], iou.astype(np.float64), -np.inf)
    pred_matched = np.zeros((num_groups, len(thresholds), num_preds), dtype=bool)
    gt_matched = np.zeros((num_groups, len(thresholds), num_gts), dtype=bool)
    if num_gts == 0:
        return pred_matched, gt_matched
    group_index = np.arange(num_groups)[:, None]
    threshold_index = np.arange(len(thresholds))[None, :]
    for slot in range(num_preds):
        candidates = np.where(gt_matched, -np.inf, iou[:, slot, None, :])  # (B, T, G)
        # argmax over the reversed gt axis returns the highest index among equal maxima
        best = num_gts - 1 - np.argmax(candidates[:, :, ::-1], axis=2)
        best_iou = np.take_along_axis(candidates, best[:, :, None], axis=2)[:, :, 0]
        matched = best_iou > thresholds[None, :]
        pred_matched[:, :, slot] = matched
        gt_matched[group_index, threshold_index, best] |= matched
    return pred_matched, gt_matched


def match_by_pose(
    rotation_error_deg: np.ndarray,
    translation_error_cm: np.ndarray,
    pred_valid: np.ndarray,
    gt_valid: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pose matching of the official metric (§6.2 step 3).

    Each prediction, in order, walks the gts sorted by ``θ_deg + d_cm`` ascending (NaN last, ties: lower
    index first) and takes the first one that is unmatched and passes both limits, which are inclusive;
    a NaN error passes. Callers pass the IoU gate through the masks: only predictions and gts matched
    at τ = 0.1 are valid.

    Args:
        rotation_error_deg: (B, P, G) float degrees (may be NaN).
        translation_error_cm: (B, P, G) float centimetres.
        pred_valid: (B, P) bool, predictions that take part.
        gt_valid: (B, G) bool, gts that take part.
        thresholds: (T, 2) float, rows ``(degrees, cm)``.
    Returns:
        ``(pred_matched, gt_matched)``: (B, T, P) and (B, T, G) bool.
    """
    num_groups, num_preds, num_gts = rotation_error_deg.shape
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1, 2)
    pred_matched = np.zeros((num_groups, len(thresholds), num_preds), dtype=bool)
    gt_matched = np.zeros((num_groups, len(thresholds), num_gts), dtype=bool)
    if num_gts == 0:
        return pred_matched, gt_matched
    total = rotation_error_deg + translation_error_cm
    walk_rank = np.argsort(np.argsort(total, axis=2, kind="stable"), axis=2, kind="stable")  # NaN last
    # NaN passes: the reference tests "error > limit" and skips only then
    rotation_fails = rotation_error_deg[:, :, None, :] > thresholds[None, None, :, 0, None]  # (B, P, T, G)
    translation_fails = translation_error_cm[:, :, None, :] > thresholds[None, None, :, 1, None]
    passes = ~(rotation_fails | translation_fails) & gt_valid[:, None, None, :] & pred_valid[:, :, None, None]
    group_index = np.arange(num_groups)[:, None]
    threshold_index = np.arange(len(thresholds))[None, :]
    for slot in range(num_preds):
        eligible = passes[:, slot] & ~gt_matched  # (B, T, G)
        rank = np.where(eligible, walk_rank[:, slot, None, :], num_gts)
        best = np.argmin(rank, axis=2)
        matched = eligible.any(axis=2)
        pred_matched[:, :, slot] = matched
        gt_matched[group_index, threshold_index, best] |= matched
    return pred_matched, gt_matched
