"""Keyed random generators: every draw of cleanpose derives from an integer key, never from state.

A key is a short list of non-negative integers, e.g. ``[seed, epoch, index, stream]`` for one
training sample. The same key gives the same draws on any number of workers, ranks and devices,
so a sample, a step or a test image is reproducible on its own. The last element of a key (or
a reserved marker) separates draws that would otherwise share a key:

- samples: ``[seed, epoch, index, stream]`` (`sample_generators`; test sets use epoch 0);
- per-epoch draws of a source: ``[seed, epoch, marker, stream]`` with marker `RESAMPLE_KEY`
  (frames of the epoch) or `PERMUTATION_KEY` (visiting order), both above any sample index;
- training steps and test images: see `cleanpose.engine.batching` and `cleanpose.engine.test`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

STREAMS = {"camera": 0, "real": 1, "housecat6d": 2, "test_camera": 3, "test_real": 4, "test_housecat6d": 5}
"""Stream id per dataset, the last element of every per-sample seed key."""

RESAMPLE_KEY = 2**32 - 1
"""Marks the per-epoch frame resampling draw of a NOCS source (in the index slot of the key)."""

PERMUTATION_KEY = 2**32 - 2
"""Marks the per-epoch visiting order of a source (in the index slot of the key)."""


def numpy_generator(key: Sequence[int]) -> np.random.Generator:
    """``Generator(PCG64(key))``."""
    return np.random.Generator(np.random.PCG64([int(value) for value in key]))


def torch_seed(key: Sequence[int]) -> int:
    """The 63-bit seed that `torch_generator` derives from `key` (SeedSequence)."""
    return int(np.random.SeedSequence([int(value) for value in key]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def torch_generator(key: Sequence[int], device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on `device` seeded with `torch_seed(key)`."""
    return torch.Generator(device=device).manual_seed(torch_seed(key))


def legacy_random_state(key: Sequence[int]) -> np.random.RandomState:
    """A legacy ``RandomState`` seeded with a 32-bit value derived from `key` (for reference-style draws)."""
    seed = np.random.SeedSequence([int(value) for value in key]).generate_state(1, np.uint32)[0]
    return np.random.RandomState(int(seed))


def sample_generators(seed: int, epoch: int, index: int, stream: int) -> tuple[np.random.Generator, torch.Generator]:
    """The NumPy and torch generators of one sample.

    Args:
        seed: run seed (≥ 0).
        epoch: epoch number (≥ 0); 0 for test sets.
        index: global sample index within the epoch (≥ 0).
        stream: dataset stream id (`STREAMS`).

    Returns:
        ``(Generator(PCG64([seed, epoch, index, stream])), torch.Generator)`` where the torch generator
        is seeded from the key ``[seed, epoch, index, stream, 1]`` (`torch_generator`).
    """
    key = [int(seed), int(epoch), int(index), int(stream)]
    return numpy_generator(key), torch_generator(key + [1])
