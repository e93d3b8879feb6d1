"""Depth hole filling exactly as the reference pipeline does it (`docs/data_formats.md` §3.3).

The reference calls ``fill_missing(depth_mm, 1000, 1)``: millimetres → metres, the multi-scale
dilation routine of Ku et al. ("In Defense of Classical Image Processing: Fast Depth Completion on
the CPU", CRV 2018) with ``max_depth = 3.0`` m and a bilateral blur, then back to millimetres. We
keep every OpenCV call, kernel, threshold and float32 rounding step of that routine so the output is
bit-identical; only the two per-column "top mask" loops are vectorized (same result).

Consequences kept on purpose (docs/data_formats.md P17): depths beyond 3 m are lost or replaced by filled
neighbours, pixels above the top-most valid pixel of a column stay 0, and outputs may be negative
(they fail every ``depth > 0`` test downstream).
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_DEPTH_M = 3.0
"""Inversion offset of the reference multi-scale fill (metres); depths above it are not kept."""

_VALID_M = 0.01
"""Threshold (metres, inverted units) above which a value counts as valid inside the routine."""

_CROSS_3 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


def _cross_kernel(size: int) -> np.ndarray:
    kernel = np.zeros((size, size), dtype=np.uint8)
    kernel[size // 2, :] = 1
    kernel[:, size // 2] = 1
    return kernel


_CROSS_5 = _cross_kernel(5)
_CROSS_7 = _cross_kernel(7)
_FULL_5 = np.ones((5, 5), dtype=np.uint8)
_FULL_9 = np.ones((9, 9), dtype=np.uint8)


def _below_top_mask(values: np.ndarray) -> np.ndarray:
    """True on and below the first row whose value exceeds the validity threshold, per column.

    A column without any valid value is True everywhere (``argmax`` of an all-False column is 0),
    as in the reference's per-column loop.
    """
    top_row = np.argmax(values > _VALID_M, axis=0)
    return np.arange(values.shape[0])[:, None] >= top_row[None, :]


def fill_in_multiscale(depth_m: np.ndarray, max_depth: float = MAX_DEPTH_M) -> np.ndarray:
    """Multi-scale dilation depth completion (no extrapolation, bilateral blur), in metres.

    Args:
        depth_m: (H, W) float, metres; values ≤ 0.01 mark missing depth. Converted to float32.
        max_depth: inversion offset, metres (the reference passes 3.0).

    Returns:
        (H, W) float32 metres: completed depth; 0 (or negative, for inputs beyond `max_depth`)
        where nothing could be filled.
    """
    depths_in = np.float32(depth_m)
    near = (depths_in > 0.01) & (depths_in <= 1.0)
    medium = (depths_in > 1.0) & (depths_in <= 2.0)
    far = depths_in > 2.0

    inverted = np.copy(depths_in)
    valid = inverted > _VALID_M
    inverted[valid] = max_depth - inverted[valid]

    dilated_far = cv2.dilate(np.multiply(inverted, far), _CROSS_3)
    dilated_medium = cv2.dilate(np.multiply(inverted, medium), _CROSS_5)
    dilated_near = cv2.dilate(np.multiply(inverted, near), _CROSS_7)

    # Combine from far to near so nearer surfaces win (the order matters where bins overlap).
    combined = np.copy(inverted)
    for dilated in (dilated_far, dilated_medium, dilated_near):
        overwrite = dilated > _VALID_M
        combined[overwrite] = dilated[overwrite]

    closed = cv2.morphologyEx(combined, cv2.MORPH_CLOSE, _FULL_5)

    blurred_closed = np.copy(closed)
    median = cv2.medianBlur(closed, 5)
    valid = closed > _VALID_M
    blurred_closed[valid] = median[valid]

    empty = ~(blurred_closed > _VALID_M) & _below_top_mask(blurred_closed)
    dilated = cv2.dilate(blurred_closed, _FULL_9)
    hole_filled = np.copy(blurred_closed)
    hole_filled[empty] = dilated[empty]

    top_mask = _below_top_mask(hole_filled)
    result = np.copy(hole_filled)
    for _ in range(6):
        empty = (result < _VALID_M) & top_mask
        dilated = cv2.dilate(result, _FULL_5)
        result[empty] = dilated[empty]

    median = cv2.medianBlur(result, 5)
    valid = (result > _VALID_M) & top_mask
    result[valid] = median[valid]
    # The reference reuses the median step's mask for the bilateral step.
    bilateral = cv2.bilateralFilter(result, 5, 0.5, 2.0)
    result[valid] = bilateral[valid]

    valid = result > _VALID_M
    result[valid] = max_depth - result[valid]
    return result


def fill_missing(depth_mm: np.ndarray) -> np.ndarray:
    """Fill holes in a millimetre depth map exactly like the reference ``fill_missing(d, 1000, 1)``.

    Args:
        depth_mm: (H, W) uint16 (or any real dtype) depth, millimetres; 0 marks missing depth.

    Returns:
        (H, W) float32 millimetres; ≤ 0 where no depth is available after filling.

    Raises:
        ValueError: `depth_mm` is not two-dimensional.
    """
    depth = np.asarray(depth_mm)
    if depth.ndim != 2:
        raise ValueError(f"depth_mm must be (H, W); got shape {depth.shape}")
    # Same rounding path as the reference: float64 division, float32 inside, float32 ×1000 back.
    depth_m = depth / 1000 * 1
    filled = fill_in_multiscale(depth_m)
    return filled / 1 * 1000
