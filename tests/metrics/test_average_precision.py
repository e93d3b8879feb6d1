"""cleanpose.metrics.average_precision against the brute-force AP of test_evaluate and hand cases."""

import math

import numpy as np
import pytest

from cleanpose.metrics.argsort import descending_order
from cleanpose.metrics.average_precision import voc_average_precision
from tests.metrics.test_evaluate import _brute_ap


def test_hand_cases():
    # TP, FP, TP with 3 gts: envelope precisions (1, 2/3, 2/3) at recalls (1/3, 1/3, 2/3)
    ap = voc_average_precision(np.array([[True, False, True]]), np.array([0.9, 0.8, 0.7]), 3)[0]
    third = float(np.float32(1) / np.float32(3))  # the recall is float32: 0.3333333432674408
    assert ap == pytest.approx(third * 1.0 + (float(np.float32(2) / np.float32(3)) - third) * 2 / 3, abs=1e-15)
    assert voc_average_precision(np.zeros((1, 0), bool), np.zeros(0), 0)[0] == 0.0
    assert voc_average_precision(np.zeros((1, 0), bool), np.zeros(0), 4)[0] == 0.0
    assert math.isnan(voc_average_precision(np.array([[False]]), np.array([0.5]), 0)[0])


def test_tie_order_later_first():
    np.testing.assert_array_equal(descending_order(np.array([0.5, 0.9, 0.5, 0.1])), [1, 2, 0, 3])
    # equal scores: the later (false positive) ranks first → AP 0.5 instead of 1
    assert voc_average_precision(np.array([[True, False]]), np.array([0.5, 0.5]), 1)[0] == pytest.approx(0.5)
    assert voc_average_precision(np.array([[False, True]]), np.array([0.5, 0.5]), 1)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("tie_order", ["reference", "stable"])
def test_matches_brute_force_on_random_inputs(tie_order):
    rng = np.random.default_rng(0)
    for _ in range(30):
        count = int(rng.integers(0, 40))
        flags = rng.random((4, count)) < 0.6
        scores = rng.integers(0, 6, count) / 5.0  # many ties
        num_gt = int(flags.sum(axis=1).max()) + int(rng.integers(0, 4))
        ours = voc_average_precision(flags, scores, num_gt, tie_order)
        for row in range(4):
            expected = _brute_ap(flags[row].tolist(), scores.tolist(), num_gt, tie_order)
            assert ours[row] == pytest.approx(expected, abs=1e-12) or (math.isnan(expected) and math.isnan(ours[row]))
