"""Keyed generators: same key, same draws; the documented key layout; no shared state."""

import numpy as np
import torch

from cleanpose.data.rng import legacy_random_state, numpy_generator, sample_generators, torch_generator


def test_sample_generators_follow_the_documented_keys():
    numpy_a, torch_a = sample_generators(3, 2, 4, 1)
    np.testing.assert_array_equal(numpy_a.random(5), np.random.Generator(np.random.PCG64([3, 2, 4, 1])).random(5))
    seed = int(np.random.SeedSequence([3, 2, 4, 1, 1]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    assert torch.equal(torch.rand(4, generator=torch_a), torch.rand(4, generator=torch.Generator().manual_seed(seed)))


def test_keys_separate_draws_and_repeat_exactly():
    assert numpy_generator([1, 2]).integers(1 << 60) == numpy_generator([1, 2]).integers(1 << 60)
    assert numpy_generator([1, 2]).integers(1 << 60) != numpy_generator([1, 3]).integers(1 << 60)
    assert torch.equal(torch.rand(3, generator=torch_generator([5])), torch.rand(3, generator=torch_generator([5])))
    assert not torch.equal(torch.rand(3, generator=torch_generator([5])), torch.rand(3, generator=torch_generator([6])))
    seed = int(np.random.SeedSequence([7, 8]).generate_state(1, np.uint32)[0])
    np.testing.assert_array_equal(legacy_random_state([7, 8]).rand(4), np.random.RandomState(seed).rand(4))
