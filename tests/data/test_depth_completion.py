"""fill_missing against a literal step-by-step reading of docs/data_formats.md §3.3, plus hand-checked properties."""

import cv2
import numpy as np
import pytest

from cleanpose.data.depth_completion import fill_in_multiscale, fill_missing


def _plus(size):
    kernel = np.zeros((size, size), np.uint8)
    kernel[size // 2] = 1
    kernel[:, size // 2] = 1
    return kernel


def _literal_spec_fill(depth_mm):
    """docs/data_formats.md §3.3 steps 1–13 written out literally, with per-column loops for the top masks."""
    d = np.float32(depth_mm.astype(np.float64) / 1000.0)
    near = (d > 0.01) & (d <= 1.0)
    med = (d > 1.0) & (d <= 2.0)
    far = d > 2.0
    s1 = d.copy()
    s1[s1 > 0.01] = 3.0 - s1[s1 > 0.01]
    dil_f = cv2.dilate(s1 * far, _plus(3))
    dil_m = cv2.dilate(s1 * med, _plus(5))
    dil_n = cv2.dilate(s1 * near, _plus(7))
    s2 = s1.copy()
    for dil in (dil_f, dil_m, dil_n):
        s2[dil > 0.01] = dil[dil > 0.01]
    s3 = cv2.morphologyEx(s2, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    s4 = s3.copy()
    s4[s3 > 0.01] = cv2.medianBlur(s3, 5)[s3 > 0.01]

    def top_mask(values):
        mask = np.ones(values.shape, bool)
        for col in range(values.shape[1]):
            valid_rows = np.nonzero(values[:, col] > 0.01)[0]
            first = valid_rows[0] if len(valid_rows) else 0
            mask[:first, col] = False
        return mask

    mask_a = top_mask(s4)
    s5 = s4.copy()
    empty = (s4 <= 0.01) & mask_a
    s5[empty] = cv2.dilate(s4, np.ones((9, 9), np.uint8))[empty]
    mask_b = top_mask(s5)
    s7 = s5.copy()
    for _ in range(6):
        empty = (s7 < 0.01) & mask_b
        s7[empty] = cv2.dilate(s7, np.ones((5, 5), np.uint8))[empty]
    valid = (s7 > 0.01) & mask_b
    s7[valid] = cv2.medianBlur(s7, 5)[valid]
    s7[valid] = cv2.bilateralFilter(s7, 5, 0.5, 2.0)[valid]
    s8 = s7.copy()
    s8[s7 > 0.01] = 3.0 - s7[s7 > 0.01]
    return s8 * np.float32(1000.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fill_missing_equals_literal_spec(seed):
    rng = np.random.default_rng(seed)
    depth = rng.integers(200, 3600, (40, 56)).astype(np.uint16)  # includes > 3 m values
    depth[rng.random(depth.shape) < 0.35] = 0
    depth[:5] = 0
    depth[:, 20:23] = 0
    expected = _literal_spec_fill(depth)
    result = fill_missing(depth)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)


def test_hole_inside_object_is_filled_and_top_rows_stay_zero():
    depth = np.full((30, 30), 800, np.uint16)
    depth[:6] = 0  # nothing above row 6
    depth[14:17, 14:17] = 0  # hole inside a flat surface
    result = fill_missing(depth)
    # The near bin (<= 1 m) dilates with a 7x7 cross, i.e. 3 rows up; above that nothing is filled.
    np.testing.assert_array_equal(result[:3], 0)
    assert np.all(result[3:6] > 0)
    # The hole is filled with the surface depth (float32 inversion rounding only).
    np.testing.assert_allclose(result[14:17, 14:17], 800.0, atol=1e-3)
    np.testing.assert_allclose(result[6:], 800.0, atol=1e-3)


def test_depth_beyond_three_metres_is_lost():
    depth = np.zeros((20, 20), np.uint16)
    depth[5:15, 5:15] = 3500  # 3.5 m > max_depth: inverted value is negative, never valid
    result = fill_missing(depth)
    assert not np.any(result > 0)


def test_isolated_valid_pixel_spreads_by_bin_kernel():
    # One pixel at 0.5 m (near bin: 7x7 cross), nothing else: the cross then closing/median act on it.
    depth_m = np.zeros((15, 15), np.float32)
    depth_m[7, 7] = 0.5
    result = fill_in_multiscale(depth_m)
    # The 1-pixel-wide cross is removed by the 5x5 median; nothing survives.
    np.testing.assert_array_equal(result, 0)


def test_fill_missing_rejects_non_2d():
    with pytest.raises(ValueError, match=r"depth_mm must be \(H, W\); got shape \(2, 2, 2\)"):
        fill_missing(np.zeros((2, 2, 2), np.uint16))
