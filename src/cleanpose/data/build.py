"""Which dataset a config asks for: the one place that maps ``data.format`` / test split to a Dataset.

The engine (`train`, `test`, queue extraction, the demo) builds its datasets here, so a new format
needs a reader, a Dataset class (`cleanpose.data.datasets`) and one branch below.
"""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from cleanpose.config import TrainConfig
from cleanpose.data.datasets import (
    HouseCat6DTestDataset,
    HouseCat6DTrainingDataset,
    NocsTestDataset,
    NocsTrainingDataset,
)
from cleanpose.data.decoded_cache import DecodedFrameCache
from cleanpose.data.depth_cache import FilledDepthCache
from cleanpose.data.skips import SkipCounter


def build_training_datasets(config: TrainConfig) -> list[Dataset]:
    """One dataset per source, in batch order (NOCS: ``data.sources``; HouseCat6D: one).

    The datasets share one filled-depth cache (256 frames in memory, ``data.depth_cache_dir`` on
    disk), one decoded colour/mask cache (``data.decoded_cache_dir``, off by default) and one skip counter.
    """
    data, seed = config.data, config.run.seed
    cache = FilledDepthCache(data.depth_cache_dir, max_items=256)
    skips = SkipCounter()
    common = dict(
        image_size=data.image_size,
        num_points=data.num_points,
        seed=seed,
        depth_cache=cache,
        skips=skips,
        decoded_cache=DecodedFrameCache(data.decoded_cache_dir),
    )
    if data.format == "housecat6d":
        return [HouseCat6DTrainingDataset(data.root, **common)]
    return [
        NocsTrainingDataset(data.root, source, count, outlier_threshold=data.outlier_threshold, **common)
        for source, count in zip(data.sources, data.images_per_epoch, strict=False)
    ]


def build_test_dataset(
    root: str | os.PathLike,
    split: str,
    *,
    masks: str,
    image_size: int,
    num_points: int,
    seed: int,
    depth_cache_dir: str | None = None,
) -> Dataset:
    """REAL275 / CAMERA25 (``split`` real / camera) or HouseCat6D (``split`` housecat6d) test images.

    Args:
        root: dataset root.
        split: ``"real"``, ``"camera"`` or ``"housecat6d"``.
        masks: ``"segmentation"`` (the segmentation-result pickles) or anything else for the
            ground-truth masks (HouseCat6D always uses its ground-truth masks).
        image_size, num_points: as in training.
        seed: key of the point sampling draws.
        depth_cache_dir: disk cache of the filled depth (64 frames are also kept in memory).
    """
    cache = FilledDepthCache(depth_cache_dir, max_items=64)
    common = dict(image_size=image_size, num_points=num_points, seed=seed, depth_cache=cache)
    if split == "housecat6d":
        return HouseCat6DTestDataset(root, **common)
    detections = "segmentation" if masks == "segmentation" else "ground_truth"
    return NocsTestDataset(root, split, detections=detections, **common)


def build_run_test_dataset(config: TrainConfig, masks: str, *, root=None, split: str | None = None) -> Dataset:
    """`build_test_dataset` with a run's settings: ``data.image_size``, ``data.num_points``, ``run.seed`` and
    ``data.depth_cache_dir``; ``root`` and ``split`` default to ``data.root`` and ``data.test_split``."""
    data = config.data
    return build_test_dataset(
        data.root if root is None else root,
        data.test_split if split is None else split,
        masks=masks,
        image_size=data.image_size,
        num_points=data.num_points,
        seed=config.run.seed,
        depth_cache_dir=data.depth_cache_dir,
    )
