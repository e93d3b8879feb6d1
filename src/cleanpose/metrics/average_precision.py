"""VOC "all points" average precision of the official NOCS metric (docs/metrics.md §7)."""

from __future__ import annotations

import numpy as np

from cleanpose.metrics.argsort import TieOrder, descending_order

__all__ = ["voc_average_precision"]


def voc_average_precision(
    matched: np.ndarray, scores: np.ndarray, num_gt: int, tie_order: TieOrder = "reference"
) -> np.ndarray:
    """AP of pooled predictions, one value per row of ``matched`` (one row per threshold).

    Predictions are ordered by score descending (equal scores: ``tie_order``); ``prec_k = tp_k / k``
    (float64) and ``rec_k = float32(tp_k) / num_gt`` computed **in float32** as the reference does (it moves APs by up
    to ~1e-7). After padding ``rec = [0, rec, 1]``, ``prec = [0, prec, 0]`` and the monotone envelope,
    ``AP = Σ (rec_i − rec_{i−1}) · prec_i`` over the steps where the recall changes.

    Args:
        matched: (T, N) bool, prediction n is a true positive at threshold t.
        scores: (N,) float detection scores.
        num_gt: number of gts the recall is relative to. With ``num_gt = 0`` and N > 0 the AP is NaN
            (0/0 recall, as in the reference); with N = 0 it is 0.
        tie_order: ``"reference"`` (NumPy's generic sort, as the official code) or ``"stable"``.
    Returns:
        (T,) float64 AP as a fraction in [0, 1], or NaN.
    """
    matched = np.asarray(matched, dtype=bool)
    num_thresholds, num_preds = matched.shape
    true_positives = np.cumsum(matched[:, descending_order(np.asarray(scores), tie_order)], axis=1)
    precision = true_positives / np.arange(1, num_preds + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = true_positives.astype(np.float32) / np.float32(num_gt)
    zeros, ones = np.zeros((num_thresholds, 1)), np.ones((num_thresholds, 1))
    precision = np.concatenate([zeros, precision, zeros], axis=1)
    recall = np.concatenate([zeros, recall.astype(np.float64), ones], axis=1)
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    step = recall[:, 1:] - recall[:, :-1]
    changed = recall[:, 1:] != recall[:, :-1]  # True for NaN, as in the reference
    return np.where(changed, step * precision[:, 1:], 0.0).sum(axis=1)
