"""Turn one frame record into network input: crop window, pixel choice, back-projection, targets.

Shared by every dataset (spec `data_formats.md` §3.2–§3.7, §4.2, §5.5–§5.6). Each step is a small
function whose rounding path follows the reference so that, given the same random draws, the
sample equals the reference's: depth is millimetres on entry (float32 after `fill_missing`) and
metres from `backproject_choice` on.

Index conventions: a crop window is ``[rmin, rmax) × [cmin, cmax)`` (rows × columns, exclusive
ends). ``choose`` indices are row-major flat indices into that window (``row·w + col``), and after
`remap_choose` into the ``S × S`` resized crop (``row·S + col``).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as tvf
from scipy.spatial import cKDTree

from cleanpose.data.augment import RandomSource
from cleanpose.geometry import backproject, remove_y_rotation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAX_WINDOW = 440
"""Largest crop side of `crop_window`, pixels (pitfall P18: larger objects are cut)."""

MIN_TEST_POINTS = 16
"""A test detection is kept only with more than this many valid pixels (reference rule, §4.2)."""


class CropWindow(NamedTuple):
    """Square image window ``[rmin, rmax) × [cmin, cmax)`` in pixels (rows, columns)."""

    rmin: int
    rmax: int
    cmin: int
    cmax: int

    @property
    def size(self) -> int:
        """Side length in pixels (``rmax − rmin``, equal to ``cmax − cmin``)."""
        return self.rmax - self.rmin


def crop_window(bbox, image_height: int, image_width: int, max_size: int = MAX_WINDOW) -> CropWindow:
    """The reference's square crop window ``get_bbox`` (spec §3.4).

    Side ``ws = min((max(h, w) // 40 + 1)·40, max_size)`` (strictly larger than the box unless capped),
    centred on ``((y1 + y2)//2, (x1 + x2)//2)``, then shifted into the image: down if it starts above
    row 0, right if left of column 0, then up if it ends below the last row, left if past the last
    column. The window is not clipped, so for a window larger than the image it may stay outside.

    Args:
        bbox: ``[y1, x1, y2, x2]`` integers, pixels, y2/x2 exclusive.
        image_height, image_width: image size in pixels (NOCS 480 × 640, HouseCat6D 852 × 1096).
        max_size: cap on the side (440 in the reference).

    Returns:
        The window; ``rmax − rmin == cmax − cmin == ws``.
    """
    y1, x1, y2, x2 = (int(value) for value in bbox)
    size = min((max(y2 - y1, x2 - x1) // 40 + 1) * 40, max_size)
    half = size // 2  # size is a multiple of 40, and the reference's int(size / 2) equals size // 2
    centre_row, centre_col = (y1 + y2) // 2, (x1 + x2) // 2
    rmin, rmax = centre_row - half, centre_row + half
    cmin, cmax = centre_col - half, centre_col + half
    if rmin < 0:
        rmax, rmin = rmax - rmin, 0
    if cmin < 0:
        cmax, cmin = cmax - cmin, 0
    if rmax > image_height:
        rmin, rmax = rmin - (rmax - image_height), image_height
    if cmax > image_width:
        cmin, cmax = cmin - (cmax - image_width), image_width
    return CropWindow(rmin, rmax, cmin, cmax)


def window_indices(mask: np.ndarray, window: CropWindow) -> np.ndarray:
    """Row-major flat indices of the True pixels of `mask` inside `window`.

    Args:
        mask: (H, W) bool, True on usable object pixels (instance AND depth > 0).
        window: crop window.

    Returns:
        (M,) int64 indices ``row·w + col`` relative to the window (w = window side; a window that
        sticks out of the image, only possible for images smaller than the window, is cut by
        NumPy slicing exactly as in the reference).
    """
    return np.flatnonzero(mask[window.rmin : window.rmax, window.cmin : window.cmax])


def sample_indices(count: int, num_points: int, rng: RandomSource) -> np.ndarray:
    """Which of `count` candidates to keep: the reference's point-count rule.

    ``count ≤ num_points`` draws `num_points` with replacement (repeats), otherwise without
    replacement; the order is the drawn order, not sorted.

    Args:
        count: number of candidates, ≥ 1.
        num_points: number to draw.
        rng: NumPy random source (one ``choice`` draw).

    Returns:
        (num_points,) int64 indices into the candidates.

    Raises:
        ValueError: `count` < 1.
    """
    if count < 1:
        raise ValueError(f"cannot sample {num_points} points from {count} candidates")
    return np.asarray(rng.choice(count, num_points, replace=count <= num_points), dtype=np.int64)


def backproject_choice(
    depth_mm: np.ndarray, intrinsics: np.ndarray, mask: np.ndarray, window: CropWindow, choice: np.ndarray
) -> np.ndarray:
    """Camera points of the chosen window pixels (reference step 8, same rounding).

    The depth is divided by 1000 in float32 and lifted with `cleanpose.geometry.backproject`
    (float64 arithmetic, float32 result), exactly the reference's full-frame computation restricted
    to the pixels it gathers.

    Args:
        depth_mm: (H, W) float32 millimetres (filled depth).
        intrinsics: (3, 3) pixels, OpenCV convention.
        mask: (H, W) bool usable object pixels; must already include ``depth > 0``.
        window: crop window the indices refer to.
        choice: (N,) int64 indices into `window_indices(mask, window)` (from `sample_indices`).

    Returns:
        (N, 3) float32 metres, camera frame.
    """
    window_mask = np.zeros(mask.shape, dtype=bool)
    window_mask[window.rmin : window.rmax, window.cmin : window.cmax] = mask[
        window.rmin : window.rmax, window.cmin : window.cmax
    ]
    depth_m = np.asarray(depth_mm, dtype=np.float32) / np.float32(1000.0)
    return backproject(depth_m, intrinsics, window_mask)[choice]


def crop_resize(rgb: np.ndarray, window: CropWindow, image_size: int) -> np.ndarray:
    """Crop the window from an RGB image and resize it bilinearly to ``image_size²`` (cv2).

    Args:
        rgb: (H, W, 3) uint8 RGB.
        window: crop window.
        image_size: output side S.

    Returns:
        (S, S, 3) uint8 RGB.
    """
    crop = np.ascontiguousarray(rgb[window.rmin : window.rmax, window.cmin : window.cmax])
    return cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_LINEAR)


def normalize_rgb(rgb: np.ndarray) -> torch.Tensor:
    """``ToTensor`` + ImageNet ``Normalize`` as in the reference.

    Args:
        rgb: (S, S, 3) uint8 RGB.

    Returns:
        (3, S, S) float32, ``(rgb/255 − mean)/std`` per channel.
    """
    return tvf.normalize(tvf.to_tensor(rgb), IMAGENET_MEAN, IMAGENET_STD)


def remap_choose(choose: np.ndarray, window: CropWindow, image_size: int) -> np.ndarray:
    """Map window indices to indices in the resized ``S × S`` crop (reference step 12).

    ``ratio = S / w``; ``floor(row·ratio)·S + floor(col·ratio)`` with ``row, col = divmod(i, w)``.

    Args:
        choose: (N,) int window indices (row-major, window side w).
        window: the crop window (square).
        image_size: S.

    Returns:
        (N,) int64 indices into the flattened ``S × S`` crop.
    """
    width = window.size
    ratio = image_size / width
    rows, cols = np.divmod(np.asarray(choose), width)
    return (np.floor(rows * ratio) * image_size + np.floor(cols * ratio)).astype(np.int64)


def canonicalize_rotation(rotation: np.ndarray, symmetric: bool) -> np.ndarray:
    """Rotation label: removes the rotation about object y for y-symmetric categories (§3.6).

    Args:
        rotation: (3, 3) float, normalized object → camera.
        symmetric: whether the category is canonicalized.

    Returns:
        (3, 3) float64 (`cleanpose.geometry.remove_y_rotation` for symmetric categories).
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    return remove_y_rotation(rotation) if symmetric else rotation


def object_coordinates(
    points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, size: np.ndarray
) -> np.ndarray:
    """Normalized object coordinates ``qo = (p − t)/(‖size‖ + 1e−8) · R`` (row vectors, §3.6).

    Args:
        points: (N, 3) metres, camera frame (the noisy points).
        rotation: (3, 3) normalized object → camera (after canonicalization).
        translation: (3,) metres.
        size: (3,) metric extents, metres; ``‖size‖`` is the normalization scale.

    Returns:
        (N, 3) float64 normalized object coordinates ``Rᵀ(p − t)/‖size‖``.
    """
    scale = np.linalg.norm(np.asarray(size, dtype=np.float32)) + np.float32(1e-8)
    return (np.asarray(points, dtype=np.float64) - translation[np.newaxis, :]) / scale @ rotation


def outlier_mask(coordinates: np.ndarray, model: np.ndarray, threshold: float) -> np.ndarray:
    """True where a point lies within `threshold` of the model point cloud (``pc_mask``, §3.6).

    ``min_j ‖coordinates_i − model_j‖ < threshold``, via a k-d tree (same distances as the
    reference's dense matrix, without its N × M memory).

    Args:
        coordinates: (N, 3) normalized object coordinates.
        model: (M, 3) normalized model points.
        threshold: distance in normalized units (0.1 in the NOCS config).

    Returns:
        (N,) bool.
    """
    distances, _ = cKDTree(np.asarray(model, dtype=np.float64)).query(np.asarray(coordinates, dtype=np.float64))
    return distances < threshold
