"""Putting samples together: the instances of one image, and the batches of several sources.

Batch order of the NOCS sources: `docs/data_formats.md` §3.1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

INPUT_KEYS = ("pts", "rgb", "choose", "category_label")
"""The network inputs of a sample (`cleanpose.data.sample.build_instance`)."""


def stack_instances(samples: Sequence[dict[str, torch.Tensor]], num_points: int, image_size: int) -> dict:
    """The network inputs of K instances of one image, stacked along a leading dimension K.

    Args:
        samples: `build_instance` samples (K ≥ 0); only `INPUT_KEYS` are kept.
        num_points, image_size: N and S, for the shapes of an empty stack.

    Returns:
        ``pts`` (K, N, 3) float32, ``rgb`` (K, 3, S, S) float32, ``choose`` (K, N) int64,
        ``category_label`` (K,) int64; zero-sized arrays of these shapes when K = 0.
    """
    if not samples:
        return {
            "pts": torch.zeros((0, num_points, 3), dtype=torch.float32),
            "rgb": torch.zeros((0, 3, image_size, image_size), dtype=torch.float32),
            "choose": torch.zeros((0, num_points), dtype=torch.int64),
            "category_label": torch.zeros((0,), dtype=torch.int64),
        }
    stacked = {key: torch.stack([sample[key] for sample in samples]) for key in INPUT_KEYS}
    stacked["category_label"] = stacked["category_label"].reshape(-1)
    return stacked


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
