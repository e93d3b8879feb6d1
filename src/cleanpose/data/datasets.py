"""Thin Dataset classes: a format reader plus the shared sample pipeline (`cleanpose.data.sample`).

Spec `data_formats.md` §3 (NOCS training), §4 (NOCS test), §5 (HouseCat6D), §7 (pitfalls).

Randomness: sample ``index`` of epoch ``epoch`` draws only from
``numpy.random.Generator(PCG64([seed, epoch, index, stream]))`` and a `torch.Generator` seeded from
the same key (`sample_generators`), never from worker or rank, so a sample is reproducible on any
number of workers and ranks. ``stream`` separates datasets sharing a seed (CAMERA, REAL, HouseCat6D,
test sets). Test samples use epoch 0.

Skips: where the reference silently redraws another image (missing CAMERA composed depth, unreadable
colour image, no usable pixel for the drawn instance) we redraw too, but count the event in a
`SkipCounter` shared with the loader workers and log a warning naming the file (once per file and
process). Everything else that is wrong with a file raises `DataFormatError` naming it.

Loaders: training datasets return one sample dict per index (collate with the default collate).
Test datasets return one *image* per index with a leading instance dimension K (possibly 0); use
``DataLoader(dataset, batch_size=None)``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cleanpose.data.augment import as_random_source, color_jitter, point_noise, rgb_add_noise
from cleanpose.data.depth_completion import fill_missing
from cleanpose.data.formats import housecat6d, nocs, segmentation
from cleanpose.data.formats.encoding import read_color, read_depth, read_mask, read_meta
from cleanpose.data.sample import (
    MIN_TEST_POINTS,
    CropWindow,
    backproject_choice,
    canonicalize_rotation,
    crop_resize,
    crop_window,
    normalize_rgb,
    object_coordinates,
    outlier_mask,
    remap_choose,
    sample_indices,
    window_indices,
)
from cleanpose.errors import DataFormatError
from cleanpose.fileio import atomic_writer

logger = logging.getLogger(__name__)

STREAMS = {"camera": 0, "real": 1, "housecat6d": 2, "test_camera": 3, "test_real": 4, "test_housecat6d": 5}
"""Stream id per dataset, the last element of every per-sample seed key."""

MAX_REDRAWS = 1000
"""Redraws of one training sample before giving up (the reference would loop forever)."""

_RESET_KEY = 2**32 - 1
"""Marks the per-epoch frame resampling draw, so its key never equals a sample's key."""

SKIP_REASONS = ("missing_depth", "unreadable_color", "empty_instance", "few_points", "no_detection")
"""Kinds of counted skips: missing CAMERA composed depth (redraw / empty test result), unreadable
colour image (redraw), drawn or detected instance without usable pixels (redraw / instance
dropped), test detection with at most 16 usable pixels (dropped, the reference rule), test image
without any kept detection (result with zero predictions)."""


def sample_generators(seed: int, epoch: int, index: int, stream: int) -> tuple[np.random.Generator, torch.Generator]:
    """The NumPy and torch generators of one sample.

    Args:
        seed: run seed (≥ 0).
        epoch: epoch number (≥ 0); 0 for test sets.
        index: global sample index within the epoch (≥ 0).
        stream: dataset stream id (`STREAMS`).

    Returns:
        ``(Generator(PCG64([seed, epoch, index, stream])), torch.Generator)`` where the torch generator
        is seeded with a 63-bit value derived from the same key.
    """
    key = [int(seed), int(epoch), int(index), int(stream)]
    numpy_generator = np.random.Generator(np.random.PCG64(key))
    torch_seed = int(np.random.SeedSequence(key + [1]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    return numpy_generator, torch.Generator().manual_seed(torch_seed)


class SkipCounter:
    """Per-reason skip counts shared between the main process and DataLoader workers.

    Backed by a `multiprocessing.Array`, so increments made in worker processes are visible to the
    trainer (pass the dataset to the loader; workers inherit the array). Call `reset` at epoch start
    and `counts` at epoch end.
    """

    def __init__(self) -> None:
        self._values = multiprocessing.Array("q", len(SKIP_REASONS))
        self._logged: set[str] = set()

    def add(self, reason: str, path: str | os.PathLike, detail: str = "") -> None:
        """Count one skip and log it (once per file and process)."""
        position = SKIP_REASONS.index(reason)
        with self._values.get_lock():
            self._values[position] += 1
        key = f"{reason}:{path}"
        if key not in self._logged:
            self._logged.add(key)
            logger.warning("skipped (%s): %s%s", reason, path, f" ({detail})" if detail else "")

    def counts(self) -> dict[str, int]:
        """Skips per reason since the last `reset`."""
        with self._values.get_lock():
            return dict(zip(SKIP_REASONS, self._values[:], strict=True))

    def reset(self) -> None:
        with self._values.get_lock():
            for position in range(len(SKIP_REASONS)):
                self._values[position] = 0

    def __getstate__(self):
        return {"_values": self._values, "_logged": set()}


class FilledDepthCache:
    """`fill_missing` output per depth file, cached in memory (LRU) and optionally on disk.

    The filled depth is a deterministic function of the file, so it is cached under a key made of
    the resolved path, its modification time (ns) and size: an edited file is filled again. Disk
    entries are float32 ``.npy`` files (1.2 MB for a 640 × 480 frame) written atomically.

    Args:
        cache_dir: folder for ``.npy`` entries; None for no disk cache.
        max_items: in-memory LRU capacity per process (0 disables it).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, max_items: int = 0) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._memory: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def _key(self, path: Path) -> str:
        try:
            status = path.stat()
        except FileNotFoundError:
            raise DataFormatError(f"{path}: depth file not found") from None
        text = f"{path.resolve()}|{status.st_mtime_ns}|{status.st_size}"
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def filled_depth(self, path: str | os.PathLike) -> np.ndarray:
        """(H, W) float32 millimetres: `fill_missing` of the decoded depth file.

        Raises:
            DataFormatError: the file is missing, unreadable or not a depth image.
        """
        path = Path(path)
        if self.cache_dir is None and self.max_items == 0:
            return fill_missing(read_depth(path))
        key = self._key(path)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        filled = None
        disk_path = self.cache_dir / f"{key}.npy" if self.cache_dir is not None else None
        if disk_path is not None and disk_path.exists():
            try:
                filled = np.load(disk_path)
            except (OSError, ValueError) as error:
                logger.warning("%s: unreadable depth cache entry for %s, refilling (%s)", disk_path, path, error)
        if filled is None:
            filled = fill_missing(read_depth(path))
            if disk_path is not None:
                with atomic_writer(disk_path) as handle:
                    np.save(handle, filled)
        if self.max_items > 0:
            self._memory[key] = filled
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)
        return filled


def _check_same_size(shapes: dict[str, tuple[int, ...]]) -> None:
    sizes = {path: shape[:2] for path, shape in shapes.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{path} {size[0]}x{size[1]}" for path, size in sizes.items())
        raise DataFormatError(f"frame images differ in size (rows x cols): {listing}")


def _training_targets(
    points: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    size: np.ndarray,
    symmetric: bool,
    model: np.ndarray | None,
    outlier_threshold: float,
) -> dict[str, torch.Tensor]:
    rotation = canonicalize_rotation(rotation, symmetric)
    targets = {
        "translation_label": torch.from_numpy(np.asarray(translation, dtype=np.float32)),
        "rotation_label": torch.from_numpy(rotation.astype(np.float32)),
        "size_label": torch.from_numpy(np.asarray(size, dtype=np.float32)),
    }
    if model is not None:
        coordinates = object_coordinates(points, rotation, translation, size)
        targets["model"] = torch.from_numpy(model.copy())
        targets["qo"] = torch.from_numpy(coordinates.astype(np.float32))
        targets["pc_mask"] = torch.from_numpy(outlier_mask(coordinates, model, outlier_threshold).astype(np.float32))
    return targets


def _image_inputs(
    rgb: np.ndarray, window: CropWindow, choose: np.ndarray, image_size: int, rng=None, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop/resize, (training only) colour augmentation, normalization, and the choose remap."""
    crop = crop_resize(rgb, window, image_size)
    if generator is not None:
        crop = rgb_add_noise(color_jitter(crop, generator), rng)
    return normalize_rgb(crop), torch.from_numpy(remap_choose(choose, window, image_size))


class _TrainingBase(Dataset):
    """Shared redraw loop of the training datasets; subclasses define `_try_build`."""

    stream: int
    seed: int
    epoch: int
    skips: SkipCounter

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        """Sample `key` (an index, or an ``(epoch, index)`` pair for persistent workers)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        numpy_generator, torch_generator = sample_generators(self.seed, epoch, index, self.stream)
        return self.build_sample(index, numpy_generator, torch_generator, epoch)

    def build_sample(self, index: int, rng, generator: torch.Generator, epoch: int | None = None) -> dict:
        """Build sample `index` from explicit generators (redrawing the index like the reference).

        Args:
            index: sample index within the epoch.
            rng: `numpy.random.Generator` (or `RandomState` for draw-for-draw reference comparison).
            generator: torch generator of `color_jitter`.
            epoch: epoch whose frame resampling to use (default: the current one).
        """
        rng = as_random_source(rng)
        epoch = self.epoch if epoch is None else epoch
        first = index
        for _ in range(MAX_REDRAWS):
            sample = self._try_build(index, rng, generator, epoch)
            if sample is not None:
                return sample
            index = int(rng.integers(len(self)))
        raise DataFormatError(
            f"{type(self).__name__}: no usable sample after {MAX_REDRAWS} redraws starting at index {first} "
            f"(skips so far: {self.skips.counts()}); the dataset has no usable instance"
        )


class NocsTrainingDataset(_TrainingBase):
    """CAMERA or REAL training samples (spec §3.1–§3.7).

    ``len`` is `num_images_per_epoch`; each epoch (`set_epoch`) maps the sample indices to frames
    with ``choice(len(list), n)`` — with replacement when the list has at most n frames, else without
    (§3.1) — keyed by (seed, epoch). With ``num_images_per_epoch = -1`` the list is used as is.

    Args:
        root: dataset root (holding ``camera/``, ``real/``, ``obj_models/`` …).
        source: ``"camera"`` (composed depth, CAMERA intrinsics) or ``"real"``.
        num_images_per_epoch: samples per epoch (CAMERA 4000·30, REAL 4000·10 in the reference), or −1.
        image_size: side of the RGB crop (224).
        num_points: points per sample (1024).
        outlier_threshold: ``pc_mask`` distance threshold, normalized units (0.1).
        seed: run seed.
        depth_cache: filled-depth cache (default: none, fill every time).
        skips: shared skip counter (default: a new one; read it via ``dataset.skips``).
        relabel_mugs: apply SPD's mug relabel (`nocs.relabel_mug`, from ``obj_models/mug_meta.pkl``)
            so mug labels match their shifted point models (pitfall P6). Off by default: the
            reference trains on the unrelabeled DPDN labels.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        source: str,
        num_images_per_epoch: int = -1,
        *,
        image_size: int = 224,
        num_points: int = 1024,
        outlier_threshold: float = 0.1,
        seed: int = 0,
        depth_cache: FilledDepthCache | None = None,
        skips: SkipCounter | None = None,
        relabel_mugs: bool = False,
    ) -> None:
        self.root = Path(root)
        self.source = source
        self.frames = nocs.train_frames(root, source)
        self.models = nocs.read_models(self.root / nocs.MODEL_FILES[source])
        self.intrinsics = nocs.intrinsics_for(source)
        self.num_images_per_epoch = int(num_images_per_epoch)
        if self.num_images_per_epoch == 0 or self.num_images_per_epoch < -1:
            raise ValueError(f"num_images_per_epoch must be -1 or positive; got {num_images_per_epoch}")
        self.image_size = image_size
        self.num_points = num_points
        self.outlier_threshold = outlier_threshold
        self.seed = seed
        self.stream = STREAMS[source]
        self.depth_cache = depth_cache if depth_cache is not None else FilledDepthCache()
        self.skips = skips if skips is not None else SkipCounter()
        self.mug_meta = nocs.read_mug_meta(self.root / nocs.MUG_META_FILE) if relabel_mugs else None
        self._frame_indices: dict[int, np.ndarray] = {}
        self.epoch = 0
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.frames) if self.num_images_per_epoch == -1 else self.num_images_per_epoch

    def frame_indices(self, epoch: int) -> np.ndarray:
        """(len,) int64 frame index of every sample of `epoch` (the reference's ``reset``)."""
        if epoch not in self._frame_indices:
            if self.num_images_per_epoch == -1:
                indices = np.arange(len(self.frames))
            else:
                rng = np.random.Generator(np.random.PCG64([self.seed, epoch, _RESET_KEY, self.stream]))
                count = len(self.frames)
                indices = rng.choice(count, self.num_images_per_epoch, replace=count <= self.num_images_per_epoch)
            self._frame_indices = {epoch: np.asarray(indices, dtype=np.int64)}
        return self._frame_indices[epoch]

    def set_epoch(self, epoch: int) -> None:
        """Select the frames of `epoch` (call before creating the epoch's loader iterator)."""
        self.epoch = int(epoch)
        self.frame_indices(self.epoch)

    def _try_build(self, index, rng, generator, epoch):
        prefix = self.frames[self.frame_indices(epoch)[index]]
        depth_file = nocs.depth_path(self.root, prefix)
        if self.source == "camera" and not depth_file.exists():
            self.skips.add("missing_depth", depth_file)
            return None
        depth = self.depth_cache.filled_depth(depth_file)
        label_file = nocs.frame_path(self.root, prefix, "_label.pkl")
        label = nocs.read_label(label_file)
        mask_file = nocs.frame_path(self.root, prefix, "_mask.png")
        mask = read_mask(mask_file)
        _check_same_size({depth_file: depth.shape, mask_file: mask.shape})
        height, width = mask.shape

        instance = int(rng.integers(0, len(label)))
        category = int(label.class_ids[instance]) - 1
        window = crop_window(label.bboxes[instance], height, width)
        object_mask = (mask == label.instance_ids[instance]) & (depth > 0)
        candidates = window_indices(object_mask, window)
        if len(candidates) == 0:
            self.skips.add("empty_instance", label_file, f"instance {label.instance_ids[instance]}")
            return None
        choice = sample_indices(len(candidates), self.num_points, rng)
        points = backproject_choice(depth, self.intrinsics, object_mask, window, choice)
        points = points + point_noise(self.num_points, rng)

        color_file = nocs.frame_path(self.root, prefix, "_color.png")
        try:
            rgb = read_color(color_file)
        except DataFormatError as error:
            self.skips.add("unreadable_color", color_file, str(error))
            return None
        _check_same_size({color_file: rgb.shape, mask_file: mask.shape})
        rgb_tensor, choose = _image_inputs(rgb, window, candidates[choice], self.image_size, rng, generator)

        model_name = label.model_names[instance]
        if model_name not in self.models:
            raise DataFormatError(
                f"{label_file}: model {model_name!r} is not in {self.root / nocs.MODEL_FILES[self.source]}"
            )
        translation, scale = label.translations[instance], label.scales[instance]
        if self.mug_meta is not None and label.class_ids[instance] == nocs.MUG_CLASS_ID:
            if model_name not in self.mug_meta:
                raise DataFormatError(f"{label_file}: mug model {model_name!r} is not in {nocs.MUG_META_FILE}")
            translation, scale = nocs.relabel_mug(label.rotations[instance], translation, scale,
                                                  *self.mug_meta[model_name])
        size = scale * label.sizes[instance]
        sample = {
            "pts": torch.from_numpy(points.astype(np.float32)),
            "rgb": rgb_tensor,
            "choose": choose,
            "category_label": torch.tensor([category], dtype=torch.int64),
        }
        sample.update(
            _training_targets(
                points,
                label.rotations[instance],
                translation,
                size,
                category in nocs.SYMMETRIC_CATEGORY_IDS,
                self.models[model_name],
                self.outlier_threshold,
            )
        )
        return sample


class HouseCat6DTrainingDataset(_TrainingBase):
    """HouseCat6D training samples (spec §5.5): every ``rgb/*.png`` of every training scene.

    Differences from NOCS: per-scene intrinsics, 852 × 1096 images, metric size label
    (``gt_scales``), symmetric ids {1, 2, 7}, and no ``model``/``qo``/``pc_mask``. Where the reference
    crashes on an instance without usable pixels (pitfall P13) we try the frame's other instances in
    a random order, then redraw the image, counting each skip.

    Args:
        root: dataset root holding ``scene*/``.
        image_size, num_points, seed, depth_cache, skips: as in `NocsTrainingDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_size: int = 224,
        num_points: int = 1024,
        seed: int = 0,
        depth_cache: FilledDepthCache | None = None,
        skips: SkipCounter | None = None,
    ) -> None:
        self.root = Path(root)
        self.frames = [
            frame for scene in housecat6d.list_scenes(root, "train") for frame in housecat6d.list_frames(scene)
        ]
        if not self.frames:
            raise DataFormatError(f"{root}: HouseCat6D training scenes hold no rgb/*.png frames")
        self.image_size = image_size
        self.num_points = num_points
        self.seed = seed
        self.stream = STREAMS["housecat6d"]
        self.depth_cache = depth_cache if depth_cache is not None else FilledDepthCache()
        self.skips = skips if skips is not None else SkipCounter()
        self._intrinsics: dict[Path, np.ndarray] = {}
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that keys the draws (the frame order is the sampler's business)."""
        self.epoch = int(epoch)

    def intrinsics(self, frame: housecat6d.HouseCatFrame) -> np.ndarray:
        if frame.scene not in self._intrinsics:
            self._intrinsics[frame.scene] = housecat6d.read_intrinsics(frame.intrinsics_path)
        return self._intrinsics[frame.scene]

    def _try_build(self, index, rng, generator, epoch):
        frame = self.frames[index]
        intrinsics = self.intrinsics(frame)
        depth = self.depth_cache.filled_depth(frame.depth_path)
        label = housecat6d.read_label(frame.label_path)
        mask = read_mask(frame.instance_path)
        _check_same_size({frame.depth_path: depth.shape, frame.instance_path: mask.shape})
        height, width = mask.shape

        instance = int(rng.integers(0, len(label)))
        remaining = None
        while True:
            window = crop_window(label.bboxes[instance], height, width)
            object_mask = (mask == label.instance_ids[instance]) & (depth > 0)
            candidates = window_indices(object_mask, window)
            if len(candidates) > 0:
                break
            self.skips.add("empty_instance", frame.label_path, f"instance {label.instance_ids[instance]}")
            if remaining is None:
                remaining = [int(i) for i in rng.permutation(len(label)) if i != instance]
            if not remaining:
                return None
            instance = remaining.pop(0)
        category = int(label.class_ids[instance]) - 1
        choice = sample_indices(len(candidates), self.num_points, rng)
        points = backproject_choice(depth, intrinsics, object_mask, window, choice)
        points = points + point_noise(self.num_points, rng)

        try:
            rgb = read_color(frame.color_path)
        except DataFormatError as error:
            self.skips.add("unreadable_color", frame.color_path, str(error))
            return None
        _check_same_size({frame.color_path: rgb.shape, frame.instance_path: mask.shape})
        rgb_tensor, choose = _image_inputs(rgb, window, candidates[choice], self.image_size, rng, generator)
        sample = {
            "pts": torch.from_numpy(points.astype(np.float32)),
            "rgb": rgb_tensor,
            "choose": choose,
            "category_label": torch.tensor([category], dtype=torch.int64),
        }
        sample.update(
            _training_targets(
                points,
                label.rotations[instance],
                label.translations[instance],
                label.sizes[instance],
                category in housecat6d.SYMMETRIC_CATEGORY_IDS,
                None,
                0.0,
            )
        )
        return sample


def mixed_batches(*loaders):
    """Zip loaders and yield their batches concatenated (CAMERA loader first, then REAL: §3.1).

    Stops with the shortest loader, like the reference's ``zip``.
    """
    for batches in zip(*loaders, strict=False):  # the shortest loader ends the epoch
        yield concat_batches(batches)


def concat_batches(batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate collated batches along dim 0, in the given order (CAMERA 30 then REAL 10, §3.1).

    Raises:
        ValueError: the batches do not have the same keys.
    """
    keys = list(batches[0])
    for batch in batches[1:]:
        if list(batch) != keys:
            raise ValueError(f"batches have different keys: {keys} vs {list(batch)}")
    return {key: torch.cat([batch[key] for batch in batches], dim=0) for key in keys}


def _empty_test_inputs(num_points: int, image_size: int) -> dict[str, torch.Tensor]:
    return {
        "pts": torch.zeros((0, num_points, 3), dtype=torch.float32),
        "rgb": torch.zeros((0, 3, image_size, image_size), dtype=torch.float32),
        "choose": torch.zeros((0, num_points), dtype=torch.int64),
        "category_label": torch.zeros((0,), dtype=torch.int64),
    }


def _test_instances(
    depth: np.ndarray,
    rgb: np.ndarray,
    intrinsics: np.ndarray,
    detections: Sequence[tuple[np.ndarray, np.ndarray, int]],
    whole_image_count: bool,
    num_points: int,
    image_size: int,
    rng,
    skips: SkipCounter,
    source: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Per-detection inputs (§4.2 step 4, §5.6); returns the stacked inputs and the kept flags.

    ``detections`` are ``(mask, bbox, category)``; a detection is kept when it has more than
    `MIN_TEST_POINTS` usable pixels — counted inside the window (NOCS) or in the whole image
    (HouseCat6D, `whole_image_count`; its instances with an empty window are then dropped and
    counted, pitfall P14).
    """
    height, width = depth.shape
    inputs = {key: [] for key in ("pts", "rgb", "choose", "category_label")}
    kept = np.zeros(len(detections), dtype=bool)
    for position, (detection_mask, bbox, category) in enumerate(detections):
        object_mask = detection_mask & (depth > 0)
        window = crop_window(bbox, height, width)
        if whole_image_count and np.count_nonzero(object_mask) <= MIN_TEST_POINTS:
            skips.add("few_points", source, f"instance {position}: <= {MIN_TEST_POINTS} valid pixels")
            continue
        candidates = window_indices(object_mask, window)
        if whole_image_count and len(candidates) == 0:
            skips.add("empty_instance", source, f"instance {position}: no pixel inside its crop window")
            continue
        if not whole_image_count and len(candidates) <= MIN_TEST_POINTS:
            skips.add("few_points", source, f"detection {position}: <= {MIN_TEST_POINTS} valid pixels in its window")
            continue
        choice = sample_indices(len(candidates), num_points, rng)
        points = backproject_choice(depth, intrinsics, object_mask, window, choice)
        rgb_tensor, choose = _image_inputs(rgb, window, candidates[choice], image_size)
        inputs["pts"].append(torch.from_numpy(points))
        inputs["rgb"].append(rgb_tensor)
        inputs["choose"].append(choose)
        inputs["category_label"].append(torch.tensor(category, dtype=torch.int64))
        kept[position] = True
    if not kept.any():
        return _empty_test_inputs(num_points, image_size), kept
    return {key: torch.stack(values) for key, values in inputs.items()}, kept


class NocsTestDataset(Dataset):
    """REAL275 / CAMERA25 test images built from segmentation results (spec §4).

    One item per ``results_*.pkl`` in sorted order. Each item holds the model inputs of the kept
    detections (``pts`` (K, N, 3), ``rgb`` (K, 3, S, S), ``choose`` (K, N), ``category_label`` (K,)),
    the kept ``pred_class_ids``/``pred_bboxes``/``pred_scores``, the ground truth as stored, ``index``,
    ``frame`` and ``result_name`` (the source pickle's file name: name outputs after it, pitfall P4).
    An image without any kept detection, or a CAMERA image whose composed depth is missing, gives
    K = 0 (a result with zero predictions, pitfall P5) and a counted skip, instead of the reference's
    redraw of another image.

    Args:
        root: dataset root.
        dataset: ``"real"`` (REAL275) or ``"camera"`` (CAMERA25).
        image_size, num_points: as in training.
        detections: ``"segmentation"`` (the pickles' ``pred_*``) or ``"ground_truth"`` (instances of
            the frame's ``_mask.png`` / ``_meta.txt`` with class ≠ 0, box from the mask, score 1).
        seed: seed of the point sampling draws.
        depth_cache: filled-depth cache.
        skips: shared skip counter.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str = "real",
        *,
        image_size: int = 224,
        num_points: int = 1024,
        detections: str = "segmentation",
        seed: int = 0,
        depth_cache: FilledDepthCache | None = None,
        skips: SkipCounter | None = None,
    ) -> None:
        if detections not in ("segmentation", "ground_truth"):
            raise ValueError(f"detections must be 'segmentation' or 'ground_truth'; got {detections!r}")
        self.root = Path(root)
        self.dataset = dataset
        self.result_files = segmentation.list_result_files(segmentation.find_results_dir(root, dataset))
        self.intrinsics = nocs.intrinsics_for(dataset)
        self.image_size = image_size
        self.num_points = num_points
        self.detections = detections
        self.seed = seed
        self.stream = STREAMS[f"test_{dataset}"]
        self.depth_cache = depth_cache if depth_cache is not None else FilledDepthCache()
        self.skips = skips if skips is not None else SkipCounter()

    def __len__(self) -> int:
        return len(self.result_files)

    def _ground_truth_detections(self, prefix: str) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
        mask = read_mask(nocs.frame_path(self.root, prefix, "_mask.png"))
        present = set(np.unique(mask).tolist())
        detections, class_ids, boxes = [], [], []
        for row in read_meta(nocs.frame_path(self.root, prefix, "_meta.txt")):
            if row.class_id == 0 or row.instance_id not in present:
                continue
            instance_mask = mask == row.instance_id
            rows, cols = np.flatnonzero(instance_mask.any(axis=1)), np.flatnonzero(instance_mask.any(axis=0))
            box = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], dtype=np.int64)
            detections.append((instance_mask, box, row.class_id - 1))
            class_ids.append(row.class_id)
            boxes.append(box)
        return (
            detections,
            np.asarray(class_ids, dtype=np.int64),
            np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
            np.ones(len(class_ids), dtype=np.float32),
        )

    def __getitem__(self, index: int) -> dict:
        result_file = self.result_files[index]
        result = segmentation.read_segmentation_result(result_file)
        prefix = result.frame_prefix
        if self.detections == "segmentation":
            detections = [
                (result.pred_masks[:, :, j], result.pred_bboxes[j], int(result.pred_class_ids[j]) - 1)
                for j in range(len(result))
            ]
            class_ids, boxes, scores = result.pred_class_ids, result.pred_bboxes, result.pred_scores
        else:
            detections, class_ids, boxes, scores = self._ground_truth_detections(prefix)
        item = {
            "index": index,
            "frame": prefix,
            "result_name": result_file.name,
            **result.ground_truth,
        }
        depth_file = nocs.depth_path(self.root, prefix)
        if self.dataset == "camera" and not depth_file.exists():
            self.skips.add("missing_depth", depth_file, "image gets zero predictions")
            kept = np.zeros(len(detections), dtype=bool)
            inputs = _empty_test_inputs(self.num_points, self.image_size)
        else:
            color_file = nocs.frame_path(self.root, prefix, "_color.png")
            rgb = read_color(color_file)
            depth = self.depth_cache.filled_depth(depth_file)
            shapes = {color_file: rgb.shape, depth_file: depth.shape}
            if detections:
                shapes[result_file] = detections[0][0].shape
            _check_same_size(shapes)
            rng, _ = sample_generators(self.seed, 0, index, self.stream)
            inputs, kept = _test_instances(
                depth, rgb, self.intrinsics, detections, False, self.num_points, self.image_size, rng,
                self.skips, result_file,
            )
            if len(detections) and not kept.any():
                self.skips.add("no_detection", result_file, "no detection with more than 16 valid pixels")
        item.update(inputs)
        item.update(pred_class_ids=class_ids[kept], pred_bboxes=boxes[kept], pred_scores=scores[kept])
        return item


class HouseCat6DTestDataset(Dataset):
    """HouseCat6D test images with ground-truth masks as detections (spec §5.6).

    One item per ``test_scene*/rgb/*.png`` (scenes and frames sorted). Items have the same keys as
    `NocsTestDataset`; ``result_name`` is ``<scene folder>/<frame>.pkl``. Kept instances have more
    than 16 usable pixels in the whole image; an instance whose crop window has none is dropped and
    counted, and an image with none kept gives K = 0 (pitfall P14).

    Args:
        root: dataset root holding ``test_scene*/``.
        image_size, num_points, seed, depth_cache, skips: as in `NocsTestDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_size: int = 224,
        num_points: int = 1024,
        seed: int = 0,
        depth_cache: FilledDepthCache | None = None,
        skips: SkipCounter | None = None,
    ) -> None:
        self.root = Path(root)
        self.frames = [
            frame for scene in housecat6d.list_scenes(root, "test") for frame in housecat6d.list_frames(scene)
        ]
        self.image_size = image_size
        self.num_points = num_points
        self.seed = seed
        self.stream = STREAMS["test_housecat6d"]
        self.depth_cache = depth_cache if depth_cache is not None else FilledDepthCache()
        self.skips = skips if skips is not None else SkipCounter()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        frame = self.frames[index]
        label = housecat6d.read_label(frame.label_path)
        mask = read_mask(frame.instance_path)
        rgb = read_color(frame.color_path)
        depth = self.depth_cache.filled_depth(frame.depth_path)
        _check_same_size({frame.instance_path: mask.shape, frame.color_path: rgb.shape, frame.depth_path: depth.shape})
        intrinsics = housecat6d.read_intrinsics(frame.intrinsics_path)
        detections = [
            (mask == label.instance_ids[j], label.bboxes[j], int(label.class_ids[j]) - 1) for j in range(len(label))
        ]
        rng, _ = sample_generators(self.seed, 0, index, self.stream)
        inputs, kept = _test_instances(
            depth, rgb, intrinsics, detections, True, self.num_points, self.image_size, rng, self.skips,
            frame.label_path,
        )
        if not kept.any():
            self.skips.add("no_detection", frame.label_path, "no instance with more than 16 valid pixels")
        item = {
            "index": index,
            "frame": f"{frame.scene.name}/{frame.name}",
            "result_name": f"{frame.scene.name}/{frame.name}.pkl",
            **housecat6d.ground_truth_record(label),
            **inputs,
        }
        raw_class_ids = np.asarray(label.raw["class_ids"])
        item.update(
            pred_class_ids=raw_class_ids[kept],
            pred_bboxes=np.asarray(label.raw["bboxes"])[kept],
            pred_scores=np.ones(len(label), dtype=np.float32)[kept],
        )
        return item
