"""Turn one frame record into network input: crop window, pixel choice, back-projection, targets.

Shared by every dataset and by `cleanpose.engine.predict` (`docs/data_formats.md` §3.2–§3.7, §4.2,
§5.5–§5.6): `build_instance` chains the steps for one object. Each step is a small function whose
rounding path follows the reference so that, given the same random draws, the sample equals the
reference's: depth is millimetres on entry (float32 after `fill_missing`) and metres from
`backproject_choice` on.

Index conventions: a crop window is ``[rmin, rmax) × [cmin, cmax)`` (rows × columns, exclusive
ends). ``choose`` indices are row-major flat indices into that window (``row·w + col``), and after
`remap_choose` into the ``S × S`` resized crop (``row·S + col``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as tvf
from scipy.spatial import cKDTree

from cleanpose.data.augment import RandomSource, color_jitter, point_noise, rgb_add_noise
from cleanpose.geometry import backproject, remove_y_rotation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAX_WINDOW = 440
"""Largest crop side of `crop_window`, pixels (docs/data_formats.md P18: larger objects are cut)."""

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


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``[y1, x1, y2, x2]`` (y2, x2 exclusive), int64, of a non-empty (H, W) bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], dtype=np.int64)


def crop_window(bbox, image_height: int, image_width: int, max_size: int = MAX_WINDOW) -> CropWindow:
    """The reference's square crop window ``get_bbox`` (docs/data_formats.md §3.4).

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
    to the pixels it gathers; only the window is touched (same slicing as `window_indices`).

    Args:
        depth_mm: (H, W) float32 millimetres (filled depth).
        intrinsics: (3, 3) pixels, OpenCV convention.
        mask: (H, W) bool usable object pixels; must already include ``depth > 0``.
        window: crop window the indices refer to.
        choice: (N,) int64 indices into `window_indices(mask, window)` (from `sample_indices`).

    Returns:
        (N, 3) float32 metres, camera frame.
    """
    rows, cols = slice(window.rmin, window.rmax), slice(window.cmin, window.cmax)
    origin = (rows.indices(mask.shape[0])[0], cols.indices(mask.shape[1])[0])
    depth_m = np.asarray(depth_mm[rows, cols], dtype=np.float32) / np.float32(1000.0)
    return backproject(depth_m, intrinsics, mask[rows, cols], origin)[choice]


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


class InstanceSkipped(Exception):
    """An instance gives no sample (too few usable pixels, unreadable colour image).

    Control flow between `build_instance` and its callers, which count the skip
    (`cleanpose.data.skips`) or report it per object (`cleanpose.engine.predict`); never shown to users.

    Attributes:
        reason: a `cleanpose.data.skips.SKIP_REASONS` entry.
        detail: what was wrong, in words.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PoseLabel(NamedTuple):
    """Ground truth of one training instance (docs/data_formats.md §3.6, §5.5).

    Attributes:
        rotation: (3, 3) normalized object → camera.
        translation: (3,) metres.
        size: (3,) metric extents, metres.
        symmetric: whether the category's rotation about y is removed (`canonicalize_rotation`).
        model: (M, 3) normalized model points, or None (HouseCat6D: no ``model``/``qo``/``pc_mask``).
        outlier_threshold: ``pc_mask`` distance threshold, normalized units (unused without a model).
    """

    rotation: np.ndarray
    translation: np.ndarray
    size: np.ndarray
    symmetric: bool
    model: np.ndarray | None = None
    outlier_threshold: float = 0.0


class BuiltInstance(NamedTuple):
    """`build_instance` output.

    Attributes:
        sample: the sample dict (see `build_instance`).
        window: the crop window.
        num_pixels: usable pixels (instance mask and depth > 0) inside the window, the candidates
            the `num_points` points were drawn from.
    """

    sample: dict[str, torch.Tensor]
    window: CropWindow
    num_pixels: int


def pose_targets(points: np.ndarray, label: PoseLabel) -> dict[str, torch.Tensor]:
    """Training targets of one instance (docs/data_formats.md §3.6).

    Args:
        points: (N, 3) metres, the (noisy) sampled points, before rounding to float32.
        label: the instance's ground truth.

    Returns:
        ``translation_label`` (3,), ``rotation_label`` (3, 3) (canonicalized), ``size_label`` (3,),
        float32; with a model also ``model`` (M, 3), ``qo`` (N, 3) float32 and ``pc_mask`` (N,) float32.
    """
    rotation = canonicalize_rotation(label.rotation, label.symmetric)
    targets = {
        "translation_label": torch.from_numpy(np.asarray(label.translation, dtype=np.float32)),
        "rotation_label": torch.from_numpy(rotation.astype(np.float32)),
        "size_label": torch.from_numpy(np.asarray(label.size, dtype=np.float32)),
    }
    if label.model is not None:
        coordinates = object_coordinates(points, rotation, label.translation, label.size)
        mask = outlier_mask(coordinates, label.model, label.outlier_threshold)
        targets["model"] = torch.from_numpy(label.model.copy())
        targets["qo"] = torch.from_numpy(coordinates.astype(np.float32))
        targets["pc_mask"] = torch.from_numpy(mask.astype(np.float32))
    return targets


def _check_counts(object_mask: np.ndarray, candidates: np.ndarray, min_window_points: int, min_image_points):
    if min_image_points is not None and np.count_nonzero(object_mask) <= min_image_points:
        raise InstanceSkipped("few_points", f"<= {min_image_points} valid pixels")
    if len(candidates) == 0 and min_window_points == 0:
        raise InstanceSkipped("empty_instance", "no valid pixel inside its crop window")
    if len(candidates) <= min_window_points:
        raise InstanceSkipped("few_points", f"<= {min_window_points} valid pixels in its crop window")


def build_instance(
    depth_mm: np.ndarray,
    intrinsics: np.ndarray,
    instance_mask: np.ndarray,
    bbox,
    rgb: np.ndarray | Callable[[], np.ndarray],
    category: int,
    *,
    num_points: int,
    image_size: int,
    rng: RandomSource,
    min_window_points: int = 0,
    min_image_points: int | None = None,
    augment: torch.Generator | None = None,
    label: PoseLabel | None = None,
) -> BuiltInstance:
    """One object of one frame as network input: crop → back-projection → colour → sample dict.

    Steps (docs/data_formats.md §3.3–§3.7, §4.2 step 4): usable pixels = instance mask AND depth > 0; crop window
    of `bbox` (`crop_window`); `num_points` of the window's usable pixels drawn (`sample_indices`,
    one ``rng.choice``) and back-projected; with `augment`, clipped Gaussian point noise (``rng``),
    colour jitter (`augment`) and RGB noise (``rng``), in the reference's order; crop resized to
    ``S × S``, normalized; ``choose`` remapped into the resized crop.

    Args:
        depth_mm: (H, W) float32 millimetres (filled depth).
        intrinsics: (3, 3) pixels.
        instance_mask: (H, W) bool, the object's pixels.
        bbox: ``[y1, x1, y2, x2]`` pixels (exclusive ends), the box the crop window is built on.
        rgb: (H, W, 3) uint8 RGB, or a function returning it, called only once the points are drawn
            (training reads the colour image there, as the reference does); it may raise
            `InstanceSkipped` (unreadable image).
        category: 0-based category id.
        num_points: N.
        image_size: S.
        rng: NumPy random source of the point choice (and, with `augment`, of the noises).
        min_window_points: the instance needs more usable pixels than this in its window
            (training 0, NOCS test 16).
        min_image_points: if given, the instance needs more usable pixels than this in the whole
            image (HouseCat6D test 16).
        augment: torch generator of the training augmentation; None for test and prediction.
        label: ground truth, adding the `pose_targets` keys (training).

    Returns:
        The sample ``pts`` (N, 3) float32 metres, ``rgb`` (3, S, S) float32, ``choose`` (N,) int64,
        ``category_label`` (1,) int64 (+ targets), its window and its number of usable pixels.

    Raises:
        InstanceSkipped: too few usable pixels (``empty_instance`` or ``few_points``), or from `rgb`.
    """
    height, width = depth_mm.shape
    object_mask = instance_mask & (depth_mm > 0)
    window = crop_window(bbox, height, width)
    candidates = window_indices(object_mask, window)
    _check_counts(object_mask, candidates, min_window_points, min_image_points)
    choice = sample_indices(len(candidates), num_points, rng)
    points = backproject_choice(depth_mm, intrinsics, object_mask, window, choice)
    if augment is not None:
        points = points + point_noise(num_points, rng)
    crop = crop_resize(rgb() if callable(rgb) else rgb, window, image_size)
    if augment is not None:
        crop = rgb_add_noise(color_jitter(crop, augment), rng)
    sample = {
        "pts": torch.from_numpy(points.astype(np.float32)),
        "rgb": normalize_rgb(crop),
        "choose": torch.from_numpy(remap_choose(candidates[choice], window, image_size)),
        "category_label": torch.tensor([category], dtype=torch.int64),
    }
    if label is not None:
        sample.update(pose_targets(points, label))
    return BuiltInstance(sample, window, len(candidates))
