"""cleanpose.metrics.matching against the literal greedy loops of test_evaluate, with many ties."""

import numpy as np
import pytest

from cleanpose.metrics.matching import match_by_iou, match_by_pose
from tests.metrics.test_evaluate import _brute_iou_match, _brute_pose_match


def test_iou_tie_takes_higher_gt_index():
    iou = np.array([[[0.5, 0.5], [0.5, 0.2]]], dtype=np.float32)
    pred, gt = match_by_iou(iou, np.ones((1, 2), bool), np.ones((1, 2), bool), np.array([0.25]))
    # prediction 0 takes gt 1 (tie → higher index), so prediction 1 can still take gt 0
    np.testing.assert_array_equal(pred[0, 0], [True, True])
    np.testing.assert_array_equal(gt[0, 0], [True, True])


def test_iou_equal_to_threshold_never_matches():
    iou = np.array([[[0.25]]], dtype=np.float32)
    pred, _ = match_by_iou(iou, np.ones((1, 1), bool), np.ones((1, 1), bool), np.array([0.25, 0.24]))
    np.testing.assert_array_equal(pred[0, :, 0], [False, True])


# more than 16 gts: the reference's sort of a prediction's row is no longer an insertion sort
TIE_CASES = [("stable", 4), ("reference", 4), ("reference", 24), ("stable", 24)]


@pytest.mark.parametrize("tie_order, gts", TIE_CASES)
def test_iou_matching_matches_literal_walk(tie_order, gts):
    rng = np.random.default_rng(0)
    thresholds = np.array([0.0, 0.1, 0.25, 0.5, 0.75])
    groups, preds = 40, 5
    iou = (rng.integers(0, 9, (groups, preds, gts)) / 8).astype(np.float32)  # many ties and equalities
    num_preds, num_gts = rng.integers(0, preds + 1, groups), rng.integers(0, gts + 1, groups)
    pred_valid = np.arange(preds)[None] < num_preds[:, None]
    gt_valid = np.arange(gts)[None] < num_gts[:, None]
    pred_matched, gt_matched = match_by_iou(iou, pred_valid, gt_valid, thresholds, tie_order)
    for group in range(groups):
        overlaps = iou[group, : num_preds[group], : num_gts[group]].tolist()
        for t, tau in enumerate(thresholds):
            expected_pred, expected_gt = _brute_iou_match(overlaps, int(num_gts[group]), tau, tie_order)
            assert pred_matched[group, t, : num_preds[group]].tolist() == expected_pred
            assert gt_matched[group, t, : num_gts[group]].tolist() == expected_gt
            assert (
                not pred_matched[group, t, num_preds[group] :].any()
                and not gt_matched[group, t, num_gts[group] :].any()
            )


@pytest.mark.parametrize("tie_order, gts", TIE_CASES)
def test_pose_matching_matches_literal_walk_with_nan(tie_order, gts):
    rng = np.random.default_rng(1)
    thresholds = np.array([[5.0, 2.0], [5.0, 5.0], [10.0, 2.0], [10.0, 5.0], [360.0, 100.0], [0.0, 0.0]])
    groups, preds = 40, 4
    rotation = rng.integers(0, 14, (groups, preds, gts)).astype(float)
    rotation[rng.random(rotation.shape) < 0.15] = np.nan  # NaN passes every limit and sorts last
    translation = rng.integers(0, 7, (groups, preds, gts)).astype(float)
    pred_valid = rng.random((groups, preds)) < 0.8
    gt_valid = rng.random((groups, gts)) < 0.8
    pred_matched, gt_matched = match_by_pose(rotation, translation, pred_valid, gt_valid, thresholds, tie_order)
    for group in range(groups):
        kept_i, kept_j = np.flatnonzero(pred_valid[group]), np.flatnonzero(gt_valid[group])
        errors = [[(rotation[group, i, j], translation[group, i, j]) for j in kept_j] for i in kept_i]
        for t, (degrees, cm) in enumerate(thresholds):
            if len(kept_i) and len(kept_j):
                expected_pred, expected_gt = _brute_pose_match(errors, degrees, cm, tie_order)
            else:
                expected_pred, expected_gt = [False] * len(kept_i), [False] * len(kept_j)
            assert pred_matched[group, t, kept_i].tolist() == expected_pred
            assert gt_matched[group, t, kept_j].tolist() == expected_gt
            assert not pred_matched[group, t, ~pred_valid[group]].any()
