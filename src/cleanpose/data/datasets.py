"""Thin Dataset classes: a format reader plus the shared sample builder (`cleanpose.data.sample`).

See `docs/data_formats.md` §3 (NOCS training), §4 (NOCS test), §5 (HouseCat6D), §7 (pitfalls).

Randomness: sample ``index`` of epoch ``epoch`` draws only from the generators keyed by
``(seed, epoch, index, stream)`` (`cleanpose.data.rng.sample_generators`), never from worker or
rank, so a sample is reproducible on any number of workers and ranks. ``stream`` separates datasets
sharing a seed (CAMERA, REAL, HouseCat6D, test sets). Test samples use epoch 0.

Skips: where the reference silently redraws another image (missing CAMERA composed depth, unreadable
colour image, no usable pixel for the drawn instance) we redraw too, but count the event in a
`SkipCounter` shared with the loader workers (`cleanpose.data.skips`). Everything else that is wrong
with a file raises `DataFormatError` naming it.

Loaders: training datasets return one sample dict per index (collate with the default collate).
Test datasets return one *image* per index with a leading instance dimension K (possibly 0); use
``DataLoader(dataset, batch_size=None)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cleanpose.data.augment import as_random_source
from cleanpose.data.collate import stack_instances
from cleanpose.data.decoded_cache import DecodedFrameCache
from cleanpose.data.depth_cache import FilledDepthCache
from cleanpose.data.formats import housecat6d, nocs, segmentation
from cleanpose.data.formats.encoding import read_color, read_mask, read_meta
from cleanpose.data.rng import RESAMPLE_KEY, STREAMS, numpy_generator, sample_generators
from cleanpose.data.sample import MIN_TEST_POINTS, InstanceSkipped, PoseLabel, build_instance, mask_box
from cleanpose.data.skips import SkipCounter
from cleanpose.errors import DataFormatError

MAX_REDRAWS = 1000
"""Redraws of one training sample before giving up (the reference would loop forever)."""


def _check_same_size(shapes: dict[str, tuple[int, ...]]) -> None:
    sizes = {path: shape[:2] for path, shape in shapes.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{path} {size[0]}x{size[1]}" for path, size in sizes.items())
        raise DataFormatError(f"frame images differ in size (rows x cols): {listing}")


def _color_reader(path: Path, mask_path: Path, mask_shape: tuple[int, ...], read_rgb):
    """A function reading a training colour image: unreadable → `InstanceSkipped`, other size → error.

    `read_rgb` decodes the file (a `DecodedFrameCache`'s ``color``, which is `read_color` without a cache dir).
    """

    def read() -> np.ndarray:
        try:
            rgb = read_rgb(path)
        except DataFormatError as error:
            raise InstanceSkipped("unreadable_color", str(error)) from error
        _check_same_size({path: rgb.shape, mask_path: mask_shape})
        return rgb

    return read


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
    """CAMERA or REAL training samples (docs/data_formats.md §3.1–§3.7).

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
        decoded_cache: decoded colour/mask cache (default: none, decode every time).
        relabel_mugs: apply SPD's mug relabel (`nocs.relabel_mug`, from ``obj_models/mug_meta.pkl``)
            so mug labels match their shifted point models (docs/data_formats.md P6). Off by default: the
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
        decoded_cache: DecodedFrameCache | None = None,
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
        self.decoded_cache = decoded_cache if decoded_cache is not None else DecodedFrameCache()
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
                rng = numpy_generator([self.seed, epoch, RESAMPLE_KEY, self.stream])
                count = len(self.frames)
                indices = rng.choice(count, self.num_images_per_epoch, replace=count <= self.num_images_per_epoch)
            self._frame_indices = {epoch: np.asarray(indices, dtype=np.int64)}
        return self._frame_indices[epoch]

    def set_epoch(self, epoch: int) -> None:
        """Select the frames of `epoch` (call before creating the epoch's loader iterator)."""
        self.epoch = int(epoch)
        self.frame_indices(self.epoch)

    def _label(self, label: nocs.NocsLabel, instance: int, label_file: Path) -> PoseLabel:
        """The instance's ground truth (mug relabel applied when enabled)."""
        model_name = label.model_names[instance]
        if model_name not in self.models:
            raise DataFormatError(
                f"{label_file}: model {model_name!r} is not in {self.root / nocs.MODEL_FILES[self.source]}"
            )
        translation, scale = label.translations[instance], label.scales[instance]
        if self.mug_meta is not None and label.class_ids[instance] == nocs.MUG_CLASS_ID:
            if model_name not in self.mug_meta:
                raise DataFormatError(f"{label_file}: mug model {model_name!r} is not in {nocs.MUG_META_FILE}")
            translation, scale = nocs.relabel_mug(
                label.rotations[instance], translation, scale, *self.mug_meta[model_name]
            )
        symmetric = int(label.class_ids[instance]) - 1 in nocs.SYMMETRIC_CATEGORY_IDS
        return PoseLabel(
            label.rotations[instance],
            translation,
            scale * label.sizes[instance],
            symmetric,
            self.models[model_name],
            self.outlier_threshold,
        )

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
        mask = self.decoded_cache.mask(mask_file)
        _check_same_size({depth_file: depth.shape, mask_file: mask.shape})

        instance = int(rng.integers(0, len(label)))
        color_file = nocs.frame_path(self.root, prefix, "_color.png")
        try:
            return build_instance(
                depth,
                self.intrinsics,
                mask == label.instance_ids[instance],
                label.bboxes[instance],
                _color_reader(color_file, mask_file, mask.shape, self.decoded_cache.color),
                int(label.class_ids[instance]) - 1,
                num_points=self.num_points,
                image_size=self.image_size,
                rng=rng,
                augment=generator,
                label=self._label(label, instance, label_file),
            ).sample
        except InstanceSkipped as skip:
            source = color_file if skip.reason == "unreadable_color" else label_file
            self.skips.add(skip.reason, source, f"instance {label.instance_ids[instance]}: {skip.detail}")
            return None


class HouseCat6DTrainingDataset(_TrainingBase):
    """HouseCat6D training samples (docs/data_formats.md §5.5): every ``rgb/*.png`` of every training scene.

    Differences from NOCS: per-scene intrinsics, 852 × 1096 images, metric size label
    (``gt_scales``), symmetric ids {1, 2, 7}, and no ``model``/``qo``/``pc_mask``. Where the reference
    crashes on an instance without usable pixels (docs/data_formats.md P13) we try the frame's other instances in
    a random order, then redraw the image, counting each skip.

    Args:
        root: dataset root holding ``scene*/``.
        image_size, num_points, seed, depth_cache, skips, decoded_cache: as in `NocsTrainingDataset`.
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
        decoded_cache: DecodedFrameCache | None = None,
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
        self.decoded_cache = decoded_cache if decoded_cache is not None else DecodedFrameCache()
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
        mask = self.decoded_cache.mask(frame.instance_path)
        _check_same_size({frame.depth_path: depth.shape, frame.instance_path: mask.shape})
        read_rgb = _color_reader(frame.color_path, frame.instance_path, mask.shape, self.decoded_cache.color)

        instance = int(rng.integers(0, len(label)))
        remaining = None
        while True:
            category = int(label.class_ids[instance]) - 1
            pose = PoseLabel(
                label.rotations[instance],
                label.translations[instance],
                label.sizes[instance],
                category in housecat6d.SYMMETRIC_CATEGORY_IDS,
            )
            try:
                return build_instance(
                    depth,
                    intrinsics,
                    mask == label.instance_ids[instance],
                    label.bboxes[instance],
                    read_rgb,
                    category,
                    num_points=self.num_points,
                    image_size=self.image_size,
                    rng=rng,
                    augment=generator,
                    label=pose,
                ).sample
            except InstanceSkipped as skip:
                if skip.reason == "unreadable_color":
                    self.skips.add(skip.reason, frame.color_path, skip.detail)
                    return None
                self.skips.add(skip.reason, frame.label_path, f"instance {label.instance_ids[instance]}: {skip.detail}")
            if remaining is None:
                remaining = [int(i) for i in rng.permutation(len(label)) if i != instance]
            if not remaining:
                return None
            instance = remaining.pop(0)


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
    counted, docs/data_formats.md P14).
    """
    rules = (
        dict(min_window_points=0, min_image_points=MIN_TEST_POINTS)
        if whole_image_count
        else dict(min_window_points=MIN_TEST_POINTS)
    )
    samples = []
    kept = np.zeros(len(detections), dtype=bool)
    for position, (detection_mask, bbox, category) in enumerate(detections):
        try:
            built = build_instance(
                depth,
                intrinsics,
                detection_mask,
                bbox,
                rgb,
                category,
                num_points=num_points,
                image_size=image_size,
                rng=rng,
                **rules,
            )
        except InstanceSkipped as skip:
            skips.add(skip.reason, source, f"detection {position}: {skip.detail}")
            continue
        samples.append(built.sample)
        kept[position] = True
    return stack_instances(samples, num_points, image_size), kept


class NocsTestDataset(Dataset):
    """REAL275 / CAMERA25 test images built from segmentation results (docs/data_formats.md §4).

    One item per ``results_*.pkl`` in sorted order. Each item holds the model inputs of the kept
    detections (``pts`` (K, N, 3), ``rgb`` (K, 3, S, S), ``choose`` (K, N), ``category_label`` (K,)),
    the kept ``pred_class_ids``/``pred_bboxes``/``pred_scores``, the ground truth as stored, ``index``,
    ``frame`` and ``result_name`` (the source pickle's file name: name outputs after it, docs/data_formats.md P4).
    An image without any kept detection, or a CAMERA image whose composed depth is missing, gives
    K = 0 (a result with zero predictions, docs/data_formats.md P5) and a counted skip, instead of the reference's
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
            box = mask_box(instance_mask)
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
            inputs = stack_instances([], self.num_points, self.image_size)
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
                depth,
                rgb,
                self.intrinsics,
                detections,
                False,
                self.num_points,
                self.image_size,
                rng,
                self.skips,
                result_file,
            )
            if len(detections) and not kept.any():
                self.skips.add("no_detection", result_file, "no detection with more than 16 valid pixels")
        item.update(inputs)
        item.update(pred_class_ids=class_ids[kept], pred_bboxes=boxes[kept], pred_scores=scores[kept])
        return item


class HouseCat6DTestDataset(Dataset):
    """HouseCat6D test images with ground-truth masks as detections (docs/data_formats.md §5.6).

    One item per ``test_scene*/rgb/*.png`` (scenes and frames sorted). Items have the same keys as
    `NocsTestDataset`; ``result_name`` is ``<scene folder>/<frame>.pkl``. Kept instances have more
    than 16 usable pixels in the whole image; an instance whose crop window has none is dropped and
    counted, and an image with none kept gives K = 0 (docs/data_formats.md P14).

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
            depth,
            rgb,
            intrinsics,
            detections,
            True,
            self.num_points,
            self.image_size,
            rng,
            self.skips,
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
