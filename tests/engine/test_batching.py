import numpy as np
import pytest
import torch

from cleanpose.engine.batching import (
    ShardedBatchSampler,
    epoch_permutation,
    queue_random_state,
    shard_slice,
    step_generator,
    step_seed,
)
from cleanpose.errors import ConfigError


def _keys(sampler):
    return [[index for _, index in batch] for batch in sampler]


def test_shards_of_every_rank_and_micro_batch_tile_the_global_batch():
    common = dict(num_samples=50, batch_size=6, steps=8, seed=3, epoch=2, stream=1)
    whole = _keys(ShardedBatchSampler(**common))
    order = epoch_permutation(50, 3, 2, 1)
    assert whole == [list(order[6 * step : 6 * step + 6]) for step in range(8)]
    for num_shards in (2, 3, 6):
        shards = [_keys(ShardedBatchSampler(**common, shard=s, num_shards=num_shards)) for s in range(num_shards)]
        for step in range(8):
            assert sum((shards[s][step] for s in range(num_shards)), []) == whole[step]
    assert len(set(sum(whole, []))) == 48  # drop_last: each sample at most once per epoch


def test_epochs_differ_and_keys_carry_the_epoch():
    first = list(ShardedBatchSampler(20, 4, 5, seed=0, epoch=0, stream=0))
    second = list(ShardedBatchSampler(20, 4, 5, seed=0, epoch=1, stream=0))
    assert {epoch for batch in first for epoch, _ in batch} == {0}
    assert [index for batch in first for _, index in batch] != [index for batch in second for _, index in batch]


def test_resume_mid_epoch_yields_the_remaining_steps():
    full = list(ShardedBatchSampler(30, 5, 6, seed=1, epoch=0, stream=0))
    resumed = ShardedBatchSampler(30, 5, 6, seed=1, epoch=0, stream=0, start_step=4)
    assert len(resumed) == 2 and list(resumed) == full[4:]


def test_impossible_batches_are_reported():
    with pytest.raises(ConfigError, match="cannot be cut into 4 equal shards"):
        shard_slice(30, 0, 4)
    with pytest.raises(ConfigError, match="need 60 samples per epoch; the source has 50"):
        ShardedBatchSampler(50, 10, 6, seed=0, epoch=0, stream=0)


def test_step_draws_are_keyed_by_step_and_shard_only():
    a = step_generator(5, 1, 7, 0)
    b = step_generator(5, 1, 7, 0)
    c = step_generator(5, 1, 7, 1)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=step_generator(5, 1, 7, 0)), torch.rand(4, generator=c))
    assert np.array_equal(queue_random_state(5, 1, 7, 1).rand(3), queue_random_state(5, 1, 7, 1).rand(3))
    assert not np.array_equal(queue_random_state(5, 1, 7, 1).rand(3), queue_random_state(5, 1, 8, 1).rand(3))


def test_one_generator_reseeded_with_step_seed_draws_what_the_step_generator_draws():
    # The CUDA-graph step keeps one generator and re-seeds it every step: its draws must be the eager step's.
    reused = torch.Generator()
    for step in (0, 1, 9):
        reused.manual_seed(step_seed(5, 2, step, 0))
        fresh = step_generator(5, 2, step, 0)
        assert torch.equal(torch.rand(6, generator=reused), torch.rand(6, generator=fresh))
        assert torch.equal(torch.randn(3, generator=reused), torch.randn(3, generator=fresh))
    assert step_seed(5, 2, 1, 0) != step_seed(5, 2, 1, 1) != step_seed(5, 2, 2, 1)
