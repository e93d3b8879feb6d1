"""Poses for one's own RGB-D frames: ``Predictor`` (Python) behind ``cleanpose predict``.

A frame is a colour image, a depth image, the camera intrinsics and one mask per object with its
category. Every object goes through the sample builder that training and ``cleanpose test`` use
(`cleanpose.data.sample.build_instance`: same filled depth, crop window, point sampling, colour
normalization), with the test rule that an object needs more than 16 usable depth pixels in its crop
window. All objects of a frame (or of several frames, `Predictor.predict_frames`) go through the
network in one batch. An object without a pose (empty mask, too few depth points) is returned with a
``reason`` instead of being dropped.

Randomness: the point sampling of a frame draws from ``rng`` and its confounder-queue draw from
``queue_random_state``; both default to generators keyed by the predictor's seed, so the same frame
always gives the same poses, alone or batched with others. With the generators of test image i
(`generators_of_test_image`) a frame gives exactly the poses ``cleanpose test`` writes for it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cleanpose.data.collate import stack_instances
from cleanpose.data.depth_completion import fill_missing
from cleanpose.data.formats import housecat6d, nocs
from cleanpose.data.rng import STREAMS, legacy_random_state, numpy_generator, sample_generators
from cleanpose.data.sample import MIN_TEST_POINTS, InstanceSkipped, build_instance, mask_box
from cleanpose.engine.train import resolve_device
from cleanpose.errors import CheckpointError, DataFormatError
from cleanpose.geometry import box_corners
from cleanpose.models.cuda_graph import GraphedEvalForward
from cleanpose.models.net import CleanPoseNet
from cleanpose.models.state import load_file

logger = logging.getLogger(__name__)

__all__ = ["Frame", "ObjectPose", "Predictor", "category_names", "generators_of_test_image"]

PRECISIONS = ("fp32", "bf16", "fp16")
"""Precisions of the network's forward (autocast; fp32 reproduces ``cleanpose test``)."""

BACKGROUND_IDS = (0, 255)
"""Values of an id-image mask that are background (0; 255 in NOCS masks)."""

MIN_METRIC_DEPTH = 0.05
"""A depth image whose valid values are all below this (metres, after `depth_scale`) is in the wrong unit."""

MAX_METRIC_DEPTH = 50.0
"""A float depth image (metres) whose median valid value exceeds this is in millimetres."""


@dataclass(frozen=True)
class ObjectPose:
    """One object of a frame: its pose, or why it has none.

    Attributes:
        instance: the object's mask id (id image) or position (list of masks).
        category: category name.
        score: detection score (1.0 when none was given).
        rotation: (3, 3) float64 object → camera rotation; None without pose.
        translation: (3,) float64 metres, camera frame (box centre); None without pose.
        size: (3,) float64 metres, box side lengths along the object axes; None without pose.
        corners: (8, 3) float64 metres, the box corners in the camera frame
            (``R · (±sx/2, ±sy/2, ±sz/2) + t``, sign order of `cleanpose.geometry.box_corners`); None without pose.
        num_points: usable depth pixels (mask and depth > 0) in the object's crop window; the network
            sees ``num_points`` of them, drawn with replacement when there are fewer.
        reason: None for a pose; else ``"empty_mask"`` or ``"few_points"``.
        detail: what was wrong, in words ("" for a pose).
    """

    instance: int
    category: str
    score: float
    rotation: np.ndarray | None
    translation: np.ndarray | None
    size: np.ndarray | None
    corners: np.ndarray | None
    num_points: int
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the object has a pose."""
        return self.reason is None


@dataclass
class Frame:
    """The inputs of one frame (see `Predictor.__call__` for every field)."""

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    masks: np.ndarray | Sequence[np.ndarray]
    categories: Sequence[str] | dict[int, str]
    depth_scale: float = 1000.0
    boxes: np.ndarray | None = None
    scores: Sequence[float] | None = None
    rng: np.random.Generator | None = None
    queue_random_state: np.random.RandomState | None = None
    name: str = field(default="frame")


def category_names(num_categories: int, data_format: str | None = None) -> tuple[str, ...]:
    """The category names of a network with `num_categories` outputs (NOCS 6, HouseCat6D 10).

    Raises:
        CheckpointError: a count that is neither (and no known data format).
    """
    if data_format == "housecat6d" or (data_format is None and num_categories == len(housecat6d.CATEGORY_NAMES)):
        names = housecat6d.CATEGORY_NAMES
    else:
        names = nocs.CATEGORY_NAMES
    if len(names) != num_categories:
        raise CheckpointError(
            f"the network has {num_categories} categories; only NOCS (6) and HouseCat6D (10) have known names"
        )
    return tuple(names)


def generators_of_test_image(
    seed: int, index: int, dataset: str = "real"
) -> tuple[np.random.Generator, np.random.RandomState]:
    """The point-sampling and queue generators ``cleanpose test`` uses for test image `index`."""
    rng, _ = sample_generators(seed, 0, index, STREAMS[f"test_{dataset}"])
    return rng, legacy_random_state([seed, index])


def _depth_millimetres(depth: np.ndarray, depth_scale: float, name: str) -> np.ndarray:
    """(H, W) depth in millimetres (uint16 kept as is when the scale is 1000, for `fill_missing`)."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise DataFormatError(f"{name}: depth must be (H, W); got shape {depth.shape}")
    if np.issubdtype(depth.dtype, np.integer):
        if depth_scale <= 0:
            raise DataFormatError(f"{name}: depth_scale must be positive; got {depth_scale}")
        valid = depth[depth > 0]
        if valid.size and valid.max() / depth_scale < MIN_METRIC_DEPTH:
            raise DataFormatError(
                f"{name}: integer depth with values up to {int(valid.max())} is below {MIN_METRIC_DEPTH} m at "
                f"depth_scale {depth_scale} (units per metre): metres stored as integers? Give millimetres "
                "(uint16) or float metres"
            )
        return depth if depth_scale == 1000.0 else depth.astype(np.float64) * (1000.0 / depth_scale)
    if not np.issubdtype(depth.dtype, np.floating):
        raise DataFormatError(f"{name}: depth must be uint16 (1/depth_scale m) or float metres; got {depth.dtype}")
    finite = np.where(np.isfinite(depth), depth, 0.0)
    valid = finite[finite > 0]
    if valid.size and np.median(valid) > MAX_METRIC_DEPTH:
        raise DataFormatError(
            f"{name}: float depth must be metres; its median {float(np.median(valid)):.1f} looks like millimetres"
        )
    return finite.astype(np.float64) * 1000.0


def _check_intrinsics(intrinsics, height: int, width: int, name: str) -> np.ndarray:
    matrix = np.asarray(intrinsics, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise DataFormatError(f"{name}: intrinsics must be a finite 3x3 matrix; got shape {matrix.shape}")
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    if fx <= 0 or fy <= 0 or not (0 <= cx < width and 0 <= cy < height):
        raise DataFormatError(
            f"{name}: intrinsics fx={fx:g} fy={fy:g} cx={cx:g} cy={cy:g} do not fit a {width}x{height} image "
            "(need fx, fy > 0 and the principal point inside the image)"
        )
    return matrix


def _instance_masks(masks, categories, height: int, width: int, name: str) -> list[tuple[int, np.ndarray, str]]:
    """``(instance id, (H, W) bool mask, category)`` per object, from an id image or a list of masks."""
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        if masks.shape != (height, width):
            raise DataFormatError(
                f"{name}: mask image is {masks.shape[1]}x{masks.shape[0]}, the frame {width}x{height}"
            )
        if isinstance(categories, dict):
            ids = sorted(int(key) for key in categories)
            names = [categories[key] for key in sorted(categories, key=int)]
        else:
            ids = sorted(int(value) for value in np.unique(masks) if value not in BACKGROUND_IDS)
            names = list(categories)
        if len(ids) != len(names):
            raise DataFormatError(
                f"{name}: the mask image holds {len(ids)} instance ids {ids} but {len(names)} categories were given"
            )
        return [(instance, masks == instance, category) for instance, category in zip(ids, names, strict=True)]
    masks = list(masks)
    names = list(categories.values()) if isinstance(categories, dict) else list(categories)
    if len(masks) != len(names):
        raise DataFormatError(f"{name}: {len(masks)} masks but {len(names)} categories")
    result = []
    for position, (mask, category) in enumerate(zip(masks, names, strict=True)):
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise DataFormatError(f"{name}: mask {position} is {mask.shape}, the frame {height}x{width}")
        result.append((position, mask.astype(bool), category))
    return result


class Predictor:
    """Object poses from RGB-D frames with a trained network.

    Args:
        model: the network (moved to `device`, eval mode).
        device: where the network runs: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` …
        precision: ``fp32`` | ``bf16`` | ``fp16`` autocast of the forward.
        image_size: side of the RGB crop the network was trained with (224 in the reference).
        num_points: points per object (1024 in the reference).
        categories: category names in class order; default from the number of categories.
        seed: key of the default generators.
        cuda_graph: on a CUDA device, replay the network's forward from a CUDA graph per object count
            (`cleanpose.models.cuda_graph.GraphedEvalForward`: the same poses, bit for bit, without the
            per-kernel launch cost; the first frame of each object count is slower: warm-up and capture).
            Ignored on the CPU, which runs the network itself.
    """

    def __init__(
        self,
        model: CleanPoseNet,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        image_size: int = 224,
        num_points: int = 1024,
        categories: Sequence[str] | None = None,
        seed: int = 0,
        cuda_graph: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.image_size = int(image_size)
        self.num_points = int(num_points)
        self.categories = tuple(categories) if categories else category_names(model.config.num_categories)
        self.seed = int(seed)
        self.graphed = GraphedEvalForward(self.model) if cuda_graph and self.device.type == "cuda" else None
        if cuda_graph and self.graphed is None:
            logger.info("Predictor: no CUDA graphs on %s; the network runs without", self.device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        official_config: str | Path | None = None,
        official_queue: str | Path | None = None,
        image_size: int | None = None,
        num_points: int | None = None,
        seed: int = 0,
        cuda_graph: bool = False,
    ) -> Predictor:
        """A predictor from a cleanpose checkpoint or an official CleanPose/AG-Pose one (converted in memory).

        Image size, point count and category names come from the training config stored in our
        checkpoints; official checkpoints use the reference's 224 / 1024 and the NOCS or HouseCat6D names.

        Args:
            path: checkpoint file.
            device, precision, seed, cuda_graph: see the class.
            official_config: reference YAML of an official checkpoint (default: inferred from its keys).
            official_queue: the official ``tensor_list.pkl`` queue (CleanPose needs one for its front door).
            image_size, num_points: override the stored (or reference) crop side and point count.

        Raises:
            CheckpointError: missing, unreadable or mismatching checkpoint.
        """
        from cleanpose.models import load_checkpoint
        from cleanpose.models.convert_checkpoint import load_official_model

        run_config = _peek_run_config(path)
        if run_config is None:
            model = load_official_model(path, config_path=official_config, queue_path=official_queue)
            data = {}
        else:
            model = load_checkpoint(path)
            data = run_config.get("data", {}) if isinstance(run_config, dict) else {}
        names = category_names(model.config.num_categories, data.get("format"))
        image_size = image_size if image_size is not None else data.get("image_size", 224)
        num_points = num_points if num_points is not None else data.get("num_points", 1024)
        return cls(
            model,
            device=device,
            precision=precision,
            image_size=image_size,
            num_points=num_points,
            categories=names,
            seed=seed,
            cuda_graph=cuda_graph,
        )

    def __call__(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        intrinsics: np.ndarray,
        masks: np.ndarray | Sequence[np.ndarray],
        categories: Sequence[str] | dict[int, str],
        depth_scale: float = 1000.0,
        *,
        boxes: np.ndarray | None = None,
        scores: Sequence[float] | None = None,
        rng: np.random.Generator | None = None,
        queue_random_state: np.random.RandomState | None = None,
    ) -> list[ObjectPose]:
        """Poses of the objects of one frame.

        Args:
            rgb: (H, W, 3) uint8 RGB.
            depth: (H, W) integer depth in units of 1/`depth_scale` metre (uint16 millimetres by default),
                or float metres; 0 (or NaN for float) where missing. Holes are filled as in training.
            intrinsics: (3, 3) K, pixels.
            masks: an (H, W) integer id image (`BACKGROUND_IDS` are background; objects in ascending id order)
                or a list of (H, W) boolean masks.
            categories: a category name per object (in object order), or ``{mask id: name}`` (then only
                these ids of the id image are objects).
            depth_scale: integer depth units per metre (1000 for millimetres).
            boxes: optional (K, 4) ``[y1, x1, y2, x2]`` boxes the crop windows are built on (a segmentation
                result's); default: each mask's tight box.
            scores: optional detection score per object (default 1.0).
            rng: point-sampling generator (default keyed by the seed).
            queue_random_state: confounder-queue generator (default keyed by the seed).

        Returns:
            One `ObjectPose` per object, in object order.

        Raises:
            DataFormatError: images of different sizes, depth in the wrong unit, intrinsics that do not fit
                the image, mask/category counts that differ, a category the network does not know.
        """
        frame = Frame(rgb, depth, intrinsics, masks, categories, depth_scale, boxes, scores, rng, queue_random_state)
        return self.predict_frames([frame])[0]

    def predict_frames(self, frames: Sequence[Frame]) -> list[list[ObjectPose]]:
        """Poses of several frames; all their objects go through the network in one batch.

        Each frame draws its points from its own ``rng`` and its confounder-queue entries from its own
        ``queue_random_state`` (its objects get that draw, as `cleanpose.engine.test` does per image), so
        a frame gives the same poses alone and within a batch, up to float rounding.
        """
        prepared = [self.prepare(frame) for frame in frames]
        samples = [sample for item in prepared for sample in item.samples]
        queue_idx = None
        if self.model.config.use_front_door and samples:
            pairs = zip(frames, prepared, strict=True)
            queue_idx = torch.cat([self.queue_draw(frame).expand(len(item.samples), -1, -1) for frame, item in pairs])
        outputs = self.run_network(stack_instances(samples, self.num_points, self.image_size), queue_idx)
        results, start = [], 0
        for item in prepared:
            count = len(item.samples)
            results.append(item.poses({key: value[start : start + count] for key, value in outputs.items()}))
            start += count
        return results

    def prepare(self, frame: Frame) -> _PreparedFrame:
        """Check a frame and build its objects' network inputs (the preprocessing of `predict_frames`)."""
        name = frame.name
        rgb = np.asarray(frame.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise DataFormatError(f"{name}: colour image must be (H, W, 3) uint8 RGB; got {rgb.shape} {rgb.dtype}")
        height, width = rgb.shape[:2]
        depth = np.asarray(frame.depth)
        if depth.shape[:2] != (height, width):
            raise DataFormatError(
                f"{name}: colour image is {width}x{height} but depth is {depth.shape[1] if depth.ndim > 1 else '?'}"
                f"x{depth.shape[0]}"
            )
        depth_mm = fill_missing(_depth_millimetres(depth, frame.depth_scale, name))
        intrinsics = _check_intrinsics(frame.intrinsics, height, width, name)
        objects = _instance_masks(frame.masks, frame.categories, height, width, name)
        unknown = sorted({category for _, _, category in objects} - set(self.categories))
        if unknown:
            raise DataFormatError(
                f"{name}: categories {unknown} are not known to the network (it knows {', '.join(self.categories)})"
            )
        scores = [1.0] * len(objects) if frame.scores is None else [float(score) for score in frame.scores]
        if len(scores) != len(objects) or (frame.boxes is not None and len(frame.boxes) != len(objects)):
            raise DataFormatError(f"{name}: {len(objects)} objects but {len(scores)} scores / boxes of another count")
        rng = frame.rng if frame.rng is not None else numpy_generator([self.seed, 0])
        prepared = _PreparedFrame()
        for position, (instance, mask, category) in enumerate(objects):
            entry = (instance, category, scores[position])
            if not mask.any():
                prepared.add_skip(entry, "empty_mask", "the mask has no pixel", 0)
                continue
            box = mask_box(mask) if frame.boxes is None else np.asarray(frame.boxes[position])
            try:
                built = build_instance(
                    depth_mm,
                    intrinsics,
                    mask,
                    box,
                    rgb,
                    self.categories.index(category),
                    num_points=self.num_points,
                    image_size=self.image_size,
                    rng=rng,
                    min_window_points=MIN_TEST_POINTS,
                )
            except InstanceSkipped as skip:
                usable = int(np.count_nonzero(mask & (depth_mm > 0)))
                prepared.add_skip(
                    entry,
                    "few_points",
                    f"{usable} valid depth pixels; more than "
                    f"{MIN_TEST_POINTS} needed in its crop window ({skip.detail})",
                    usable,
                )
                continue
            prepared.add(entry, built.sample, built.num_pixels)
        return prepared

    def queue_draw(self, frame: Frame) -> torch.Tensor:
        """(C, S) int64 confounder-queue entries of a frame, drawn from its ``queue_random_state``."""
        state = frame.queue_random_state
        if state is None:
            state = legacy_random_state([self.seed, 0])
        return self.model.queue.sample_indices(self.model.config.front_door.num_queue_samples, state)

    @torch.no_grad()
    def run_network(
        self, batch: dict[str, torch.Tensor], queue_idx: torch.Tensor | None = None
    ) -> dict[str, np.ndarray]:
        """``rotation`` (B, 3, 3), ``translation`` (B, 3), ``size`` (B, 3) float64 of a stacked batch (B ≥ 0).

        Args:
            batch: `stack_instances` output.
            queue_idx: (B, C, S) queue entries per object (`queue_draw`); None draws one (C, S) set for
                the batch from the default generator.
        """
        if batch["pts"].shape[0] == 0:
            return {"rotation": np.zeros((0, 3, 3)), "translation": np.zeros((0, 3)), "size": np.zeros((0, 3))}
        if queue_idx is None and self.model.config.use_front_door:
            queue_idx = self.model.queue.sample_indices(
                self.model.config.front_door.num_queue_samples, legacy_random_state([self.seed, 0])
            )
        if self.graphed is not None:  # uploads the CPU batch itself, through pinned memory
            outputs = self.graphed(batch, queue_idx, precision=self.precision)
        else:
            inputs = {key: value.to(self.device) for key, value in batch.items()}
            with self._autocast():
                outputs = self.model(inputs, queue_idx=queue_idx)
        return {
            "rotation": outputs["pred_rotation"].double().cpu().numpy(),
            "translation": outputs["pred_translation"].double().cpu().numpy(),
            "size": outputs["pred_size"].double().cpu().numpy(),
        }

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


class _PreparedFrame:
    """The objects of one frame after preprocessing: network inputs of the kept ones, reasons of the others."""

    def __init__(self) -> None:
        self.entries: list[tuple[tuple[int, str, float], int, str | None, str]] = []
        self.samples: list[dict[str, torch.Tensor]] = []

    def add(self, entry: tuple[int, str, float], sample: dict[str, torch.Tensor], num_points: int) -> None:
        self.entries.append((entry, num_points, None, ""))
        self.samples.append(sample)

    def add_skip(self, entry: tuple[int, str, float], reason: str, detail: str, num_points: int) -> None:
        self.entries.append((entry, num_points, reason, detail))

    def poses(self, outputs: dict[str, np.ndarray]) -> list[ObjectPose]:
        """`ObjectPose` per object from the network outputs of the kept objects (in order)."""
        result, kept = [], 0
        for (instance, category, score), num_points, reason, detail in self.entries:
            if reason is not None:
                result.append(ObjectPose(instance, category, score, None, None, None, None, num_points, reason, detail))
                continue
            rotation, translation, size = (outputs[key][kept] for key in ("rotation", "translation", "size"))
            corners = box_corners(size) @ rotation.T + translation
            result.append(ObjectPose(instance, category, score, rotation, translation, size, corners, num_points))
            kept += 1
        return result


def _peek_run_config(path: str | Path) -> dict | None:
    """The stored training config of a cleanpose checkpoint ({} when none); None for any other file.

    Raises:
        CheckpointError: the file is missing or cannot be read.
    """
    checkpoint = load_file(path, "checkpoint")
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        return None
    return checkpoint.get("run_config") or {}
