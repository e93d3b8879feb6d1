"""Tests of the NOCS bin predictor against explicit expectations over the bins."""

import math

import pytest
import torch

from cleanpose.config import AttentionConfig, NocsPredictorConfig
from cleanpose.models.nocs_predictor import NocsPredictor, bin_centres, reference_key_map
from tests.models.test_attention import (
    assert_close,
    check_all_parameters_get_gradients,
    check_reference_keys,
    oracle_self_attention_block,
    randomize_norms,
)
from tests.models.test_feature_aggregator import _sequential


def _tiny(num_categories=3, num_bins=8):
    return NocsPredictor(num_categories=num_categories, num_bins=num_bins, model_dim=16, hidden_dim=24, num_blocks=1,
                         num_heads=4, ffn_dim=8)  # fmt: skip


@pytest.mark.parametrize(("num_categories", "count", "config"), [(6, 2_304_896, "camera_real"),
                                                                 (10, 2_698_880, "housecat6d")])  # fmt: skip
def test_reference_sizes_parameter_count_and_keys(num_categories, count, config):
    predictor = NocsPredictor(num_categories=num_categories)
    assert sum(p.numel() for p in predictor.parameters()) == count
    assert len(predictor.state_dict()) == 51
    check_reference_keys(predictor, reference_key_map(), "nocs_predictor", config)


def test_bin_centres_are_a_non_persistent_grid():
    predictor = NocsPredictor(num_categories=1, num_bins=64)
    assert "bin_centres" not in predictor.state_dict()
    expected = torch.tensor([-0.5 + i / 64 + 1 / 128 for i in range(64)], dtype=torch.float32).view(64, 1)
    assert torch.equal(predictor.bin_centres, expected)
    assert predictor.bin_centres.dtype == torch.float32
    assert_close(bin_centres(5, dtype=torch.float64), torch.tensor([-0.4, -0.2, 0.0, 0.2, 0.4], dtype=torch.float64),
                 atol=1e-15)  # fmt: skip


@pytest.mark.parametrize("categories", [[2, 0, 2], [[1], [1], [0]]])
def test_matches_explicit_expectation(categories):
    generator = torch.Generator().manual_seed(0)
    predictor = _tiny()
    randomize_norms(predictor, generator)
    predictor.double().eval()
    features = torch.randn(3, 5, 16, generator=generator, dtype=torch.float64)
    category_tensor = torch.tensor(categories)
    with torch.no_grad():
        output = predictor(features, category_tensor)
        hidden = _sequential(predictor.feature_mlp, features, training=False)
        for block in predictor.self_attention_layer.blocks:
            hidden = oracle_self_attention_block(block, hidden)
        logits = _sequential(predictor.bin_mlp, hidden, training=False)  # (B, K, C*3*bins)
    centres = [-0.5 + i / 8 + 1 / 16 for i in range(8)]
    expected = torch.empty(3, 5, 3, dtype=torch.float64)
    for b, category in enumerate(category_tensor.view(-1).tolist()):
        for k in range(5):
            for axis in range(3):
                channels = [category * 24 + axis * 8 + i for i in range(8)]
                values = [float(logits[b, k, c]) for c in channels]
                top = max(values)
                weights = [math.exp(v - top) for v in values]
                expected[b, k, axis] = sum(w * x for w, x in zip(weights, centres)) / sum(weights)
    assert_close(output, expected)
    assert bool((output.abs() < 0.5).all())


def test_gradients_float32_and_determinism():
    generator = torch.Generator().manual_seed(1)
    predictor = _tiny()
    features = torch.randn(4, 5, 16, generator=generator)
    categories = torch.tensor([0, 1, 2, 1])
    output = predictor(features, categories)
    reference = _tiny().double()
    reference.load_state_dict(predictor.state_dict())
    with torch.no_grad():
        assert_close(output, reference(features.double(), categories), atol=1e-6, rtol=1e-5)
    check_all_parameters_get_gradients(predictor, (output * torch.randn(output.shape, generator=generator)).sum())
    predictor.eval()
    with torch.no_grad():
        assert torch.equal(predictor(features, categories), predictor(features, categories))


def test_from_config():
    config = NocsPredictorConfig(
        num_categories=4, num_bins=16, attention=AttentionConfig(num_blocks=3, model_dim=256, num_heads=8, ffn_dim=64)
    )
    predictor = NocsPredictor.from_config(config)
    assert predictor.bin_mlp[4].out_channels == 4 * 3 * 16
    assert len(predictor.self_attention_layer.blocks) == 3
    assert predictor.self_attention_layer.blocks[0].self_attention.num_heads == 8
    assert predictor.bin_centres.shape == (16, 1)
