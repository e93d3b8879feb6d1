"""Tests of cleanpose.data.shape_pairs: keyed, metric, centred view pairs from the training range."""

import math

import numpy as np
import pytest
import torch

from cleanpose.data.shape_pairs import ShapePairDataset, shape_categories
from cleanpose.data.synth.scene import DIAGONAL_RANGES
from cleanpose.data.synth.shapes import HELD_OUT_BAND, HOUSECAT6D_CATEGORIES, NOCS_CATEGORIES
from cleanpose.errors import ConfigError


def test_shape_pairs_are_keyed_metric_centred_views():
    dataset = ShapePairDataset(NOCS_CATEGORIES, num_samples=40, num_points=128, seed=5)
    later = [dataset[index] for index in (7, 3)]
    again = ShapePairDataset(NOCS_CATEGORIES, num_samples=40, num_points=128, seed=5)
    for index, sample in zip((7, 3), later):
        assert torch.equal(again[index]["views"], sample["views"])  # keyed by index, not by call order
    other = ShapePairDataset(NOCS_CATEGORIES, num_samples=40, num_points=128, seed=6)
    assert not torch.equal(other[3]["views"], later[1]["views"])
    for index in range(12):
        sample = dataset[index]
        views, category = sample["views"], NOCS_CATEGORIES[int(sample["label"])]
        assert views.shape == (2, 128, 3) and views.dtype == torch.float32
        assert views.double().mean(dim=1).abs().max() < 1e-6
        assert not torch.equal(views[0], views[1])
        # Box diagonal d in [0.8 low, 1.2 high]; the widest point pair spans at most d (plus 2 × 5 mm jitter)
        # and about the longest box edge, at least d/√3 (0.8: slack for the finite surface sample).
        low, high = DIAGONAL_RANGES[category]
        for view in views.double():
            extent = torch.cdist(view, view).max().item()
            assert 0.8 * (0.8 * low) / math.sqrt(3) <= extent <= 1.2 * high + 0.02, (category, extent)
    assert {int(dataset[index]["label"]) for index in range(40)} == set(range(6))


def test_instance_pools_come_from_the_training_range():
    dataset = ShapePairDataset(NOCS_CATEGORIES, num_samples=10, num_points=32, seed=1, instances_per_category=50)
    first_entries = np.array([unit[0] for pool in dataset.pools for unit in pool])
    assert len(first_entries) == 300
    assert not np.any((first_entries >= HELD_OUT_BAND[0]) & (first_entries < HELD_OUT_BAND[1]))


def test_category_sets():
    assert shape_categories("nocs") == NOCS_CATEGORIES
    assert shape_categories("housecat6d") == HOUSECAT6D_CATEGORIES
    with pytest.raises(ConfigError, match=r"format is 'ycb'; valid formats: nocs, housecat6d"):
        shape_categories("ycb")
