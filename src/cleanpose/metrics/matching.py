"""Greedy matching of predictions to gts inside one (image, class) group, for many thresholds at once.

docs/metrics.md §6. Each function takes a batch of B groups padded to P predictions and G gts; the
predictions are already in processing order (score descending, equal scores as the reference sorts them,
§6.3) and the gts in stored order. Every threshold is matched independently; the loop runs over the P
prediction slots only, everything else is vectorized over groups, thresholds and gts. Each prediction walks
the gts in the order of the reference's ``np.argsort`` of its row; ``walk_ranks`` gives that order.
"""

from __future__ import annotations

import numpy as np

from cleanpose.metrics.argsort import SMALL_QUICKSORT, TieOrder, ascending_order

__all__ = ["match_by_iou", "match_by_pose", "walk_ranks"]


def walk_ranks(
    values: np.ndarray, pred_valid: np.ndarray, gt_valid: np.ndarray, *, descending: bool, tie_order: TieOrder
) -> np.ndarray:
    """Position of each gt in a prediction's walk over the gts sorted by ``values`` (docs/metrics.md §6.1, §6.2).

    The reference sorts each prediction's row over the valid gts only, ascending with ``np.argsort``
    (reversed for ``descending``). Among valid gts of a row, the ranks order them exactly as that walk.

    Args:
        values: (B, P, G) float, e.g. IoUs (walked descending) or pose error sums (ascending, NaN last).
        pred_valid: (B, P) bool, rows that are walked.
        gt_valid: (B, G) bool, gts that take part (the row is compacted to them before sorting).
        descending: walk from the largest value (the reference's ``argsort(row)[::-1]``).
        tie_order: ``"reference"`` (NumPy's generic introsort) or ``"stable"`` (ascending: lower index
            first among equal values; descending: higher index first).
    Returns:
        (B, P, G) int64; smaller is earlier. Ranks of invalid slots are meaningless.
    """
    num_gts = values.shape[2]
    # a stable sort of the padded row orders the valid gts as a stable sort of the compacted row
    order = np.argsort(values, axis=2, kind="stable")
    if descending:
        order = order[:, :, ::-1]
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(num_gts), axis=2)
    if tie_order == "stable":
        return ranks
    # rows of at most 16 valid gts: NumPy's generic sort is an insertion sort, which is stable
    large = pred_valid & (gt_valid.sum(axis=1) > SMALL_QUICKSORT + 1)[:, None]
    for group, slot in zip(*np.nonzero(large)):
        gts = np.flatnonzero(gt_valid[group])
        walk = ascending_order(values[group, slot, gts], tie_order)
        ranks[group, slot, gts[walk[::-1] if descending else walk]] = np.arange(len(gts))
    return ranks


def match_by_iou(
    iou: np.ndarray,
    pred_valid: np.ndarray,
    gt_valid: np.ndarray,
    thresholds: np.ndarray,
    tie_order: TieOrder = "reference",
) -> tuple[np.ndarray, np.ndarray]:
    """IoU matching of the official metric (§6.1).

    Each prediction, in order, takes the still unmatched gt of highest IoU (equal IoUs: the earliest in
    the reference's walk, ``walk_ranks``) if that IoU is strictly greater than the threshold;
    otherwise it stays unmatched. This is the net effect of the reference's walk (stop below τ, skip
    matched gts, never match at equality).

    Args:
        iou: (B, P, G) float, IoU of prediction slot p with gt slot g; compared in float64.
        pred_valid: (B, P) bool, False for padding slots.
        gt_valid: (B, G) bool, False for padding slots.
        thresholds: (T,) float IoU thresholds τ.
        tie_order: ``"reference"`` (NumPy's generic sort, reversed) or ``"stable"`` (equal IoUs: the
            higher gt index first).
    Returns:
        ``(pred_matched, gt_matched)``: (B, T, P) and (B, T, G) bool; ``pred_matched[b, t, p]`` is True
        when prediction p of group b matched some gt at threshold ``thresholds[t]``.
    """
    num_groups, num_preds, num_gts = iou.shape
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pred_matched = np.zeros((num_groups, len(thresholds), num_preds), dtype=bool)
    gt_matched = np.zeros((num_groups, len(thresholds), num_gts), dtype=bool)
    if num_gts == 0:
        return pred_matched, gt_matched
    gt_ranks = walk_ranks(iou, pred_valid, gt_valid, descending=True, tie_order=tie_order)
    iou = np.where(pred_valid[:, :, None] & gt_valid[:, None, :], iou.astype(np.float64), -np.inf)
    group_index = np.arange(num_groups)[:, None]
    threshold_index = np.arange(len(thresholds))[None, :]
    for slot in range(num_preds):
        candidates = np.where(gt_matched, -np.inf, iou[:, slot, None, :])  # (B, T, G)
        best_iou = candidates.max(axis=2)
        tied_best = candidates == best_iou[:, :, None]
        best = np.argmin(np.where(tied_best, gt_ranks[:, slot, None, :], num_gts), axis=2)
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
    tie_order: TieOrder = "reference",
) -> tuple[np.ndarray, np.ndarray]:
    """Pose matching of the official metric (§6.2 step 3).

    Each prediction, in order, walks the valid gts sorted by ``θ_deg + d_cm`` ascending (NaN last, equal
    sums by ``tie_order``) and takes the first one that is unmatched and passes both limits, which are
    inclusive; a NaN error passes. Callers pass the IoU gate through the masks: only predictions and gts
    matched at τ = 0.1 are valid.

    Args:
        rotation_error_deg: (B, P, G) float degrees (may be NaN).
        translation_error_cm: (B, P, G) float centimetres.
        pred_valid: (B, P) bool, predictions that take part.
        gt_valid: (B, G) bool, gts that take part.
        thresholds: (T, 2) float, rows ``(degrees, cm)``.
        tie_order: ``"reference"`` (NumPy's generic sort) or ``"stable"`` (lower gt index first).
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
    walk_rank = walk_ranks(total, pred_valid, gt_valid, descending=False, tie_order=tie_order)  # NaN last
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
