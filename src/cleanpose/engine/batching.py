"""Which samples make up each training step, on any number of ranks and micro-batches.

A step's *global batch* takes, from every source (CAMERA and REAL for NOCS), the next
``batch_size`` indices of that source's epoch permutation (the reference's RandomSampler with
drop_last). The global batch is cut into ``world_size × micro_batches`` equal *shards*; shard
``s = rank · micro_batches + m`` holds slice ``s`` of every source, sources concatenated in order
(CAMERA first). Every draw is keyed by (seed, epoch, step, shard), never by rank, so two ranks with
one micro-batch each compute exactly what one process computes with two micro-batches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from cleanpose.data.rng import PERMUTATION_KEY, legacy_random_state, numpy_generator, torch_generator, torch_seed
from cleanpose.errors import ConfigError


def epoch_permutation(num_samples: int, seed: int, epoch: int, stream: int) -> np.ndarray:
    """(num_samples,) int64: the order in which an epoch visits a source's sample indices."""
    return numpy_generator([seed, epoch, PERMUTATION_KEY, stream]).permutation(num_samples)


def shard_slice(global_size: int, shard: int, num_shards: int) -> slice:
    """Positions of shard `shard` inside a source's part of the global batch."""
    if global_size % num_shards:
        raise ConfigError(
            f"a global batch of {global_size} objects from one source cannot be cut into {num_shards} equal "
            "shards (ranks × micro_batches); choose batch sizes divisible by it"
        )
    size = global_size // num_shards
    return slice(shard * size, (shard + 1) * size)


class ShardedBatchSampler(Sampler):
    """Yields, for each step of one epoch, the ``(epoch, index)`` keys of one shard of one source.

    Args:
        num_samples: samples per epoch of the source (its dataset's ``len``).
        batch_size: global objects per step from this source.
        steps: steps in the epoch (each needs ``batch_size`` fresh samples: drop_last).
        seed, epoch, stream: key of the epoch permutation (stream = the dataset's stream id).
        shard, num_shards: which slice of each global batch this sampler yields.
        start_step: first step to yield (resuming mid-epoch).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        steps: int,
        *,
        seed: int,
        epoch: int,
        stream: int,
        shard: int = 0,
        num_shards: int = 1,
        start_step: int = 0,
    ) -> None:
        if steps * batch_size > num_samples:
            raise ConfigError(
                f"{steps} steps of {batch_size} objects need {steps * batch_size} samples per epoch; the source "
                f"has {num_samples} (raise data.images_per_epoch or lower run.iterations_per_epoch)"
            )
        self.positions = shard_slice(batch_size, shard, num_shards)
        self.batch_size = batch_size
        self.steps = steps
        self.start_step = start_step
        self.epoch = epoch
        self.order = epoch_permutation(num_samples, seed, epoch, stream)

    def __len__(self) -> int:
        return self.steps - self.start_step

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            batch = self.order[step * self.batch_size : (step + 1) * self.batch_size][self.positions]
            yield [(self.epoch, int(index)) for index in batch]


def step_generator(seed: int, epoch: int, step: int, shard: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The torch generator of one shard's in-model draws (augmentation, teacher DropPath) at one step."""
    return torch_generator([seed, epoch, step, shard, 7], device)


def step_seed(seed: int, epoch: int, step: int, shard: int) -> int:
    """The seed of :func:`step_generator` (to re-seed one long-lived generator, as a CUDA graph needs)."""
    return torch_seed([seed, epoch, step, shard, 7])


def queue_random_state(seed: int, epoch: int, step: int, shard: int) -> np.random.RandomState:
    """The legacy NumPy generator of one shard's confounder-queue draw at one step (docs/model.md Q3)."""
    return legacy_random_state([seed, epoch, step, shard, 11])
