"""Tests of the instance-adaptive keypoint detector against float64 oracles and the reference layout."""

import math

import pytest
import torch

from cleanpose.config import AttentionConfig, KeypointDetectorConfig
from cleanpose.errors import ConfigError
from cleanpose.models.keypoint_detector import InstanceAdaptiveKeypointDetector, reference_key_map
from tests.models.test_attention import (
    assert_close,
    check_all_parameters_get_gradients,
    check_reference_keys,
    oracle_attention_block,
    randomize_norms,
)


def _tiny(generator, **kwargs):
    detector = InstanceAdaptiveKeypointDetector(num_keypoints=8, model_dim=16, num_blocks=2, num_heads=4, ffn_dim=8,
                                                **kwargs)  # fmt: skip
    randomize_norms(detector, generator)
    return detector


def test_reference_sizes_parameter_count_and_keys():
    detector = InstanceAdaptiveKeypointDetector()
    assert sum(p.numel() for p in detector.parameters()) == 2_662_400
    assert len(detector.state_dict()) == 73
    check_reference_keys(detector, reference_key_map(), "IAKD")


def test_queries_and_heat_map_match_explicit_loops():
    generator = torch.Generator().manual_seed(0)
    detector = _tiny(generator).double().eval()
    features = torch.randn(2, 16, 20, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        queries, heat_map = detector(features)

    with torch.no_grad():
        expected_queries = detector.keypoint_queries.unsqueeze(0).expand(2, -1, -1)
        for block in detector.attention_layer.blocks:
            expected_queries = oracle_attention_block(block, expected_queries, features.transpose(1, 2))
    assert_close(queries, expected_queries)

    expected = torch.empty(2, 8, 20, dtype=torch.float64)
    for b in range(2):
        for k in range(8):
            q = expected_queries[b, k]
            scores = []
            for n in range(20):
                f = features[b, :, n]
                norms = math.sqrt(float((q * q).sum())) * math.sqrt(float((f * f).sum()))
                cosine = float((q * f).sum()) / (norms + 1e-7)
                scores.append(cosine / 0.1)
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            for n in range(20):
                expected[b, k, n] = exps[n] / sum(exps)
    assert_close(heat_map, expected)
    assert_close(heat_map.sum(dim=2), torch.ones(2, 8, dtype=torch.float64))


def test_temperature_scales_the_log_odds():
    generator = torch.Generator().manual_seed(1)
    sharp = _tiny(generator, temperature=0.05).double().eval()
    soft = InstanceAdaptiveKeypointDetector(8, 16, 2, 4, 8, temperature=1.0).double().eval()
    soft.load_state_dict(sharp.state_dict())
    features = torch.randn(1, 16, 30, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        sharp_log, soft_log = sharp(features).heat_map.log(), soft(features).heat_map.log()
    # Same cosine scores: log-odds against point 0 scale with 1/temperature.
    assert_close(sharp_log - sharp_log[..., :1], 20 * (soft_log - soft_log[..., :1]), atol=1e-9, rtol=1e-9)


def test_float32_forward_close_to_float64_gradients_and_determinism():
    generator = torch.Generator().manual_seed(2)
    detector = _tiny(generator)
    features = torch.randn(2, 16, 24, generator=generator)
    reference = _tiny(torch.Generator().manual_seed(2)).double()
    reference.load_state_dict(detector.state_dict())
    queries, heat_map = detector(features)
    with torch.no_grad():
        queries64, heat_map64 = reference(features.double())
    assert_close(queries, queries64, atol=1e-5, rtol=1e-5)
    assert_close(heat_map, heat_map64, atol=1e-6, rtol=1e-4)
    keypoints_target = torch.randn(2, 8, 24, generator=generator)
    check_all_parameters_get_gradients(detector, (heat_map * keypoints_target).sum() + queries.square().mean())
    detector.eval()
    with torch.no_grad():
        assert torch.equal(detector(features).heat_map, detector(features).heat_map)


def test_from_config():
    config = KeypointDetectorConfig(
        num_keypoints=5, query_dim=12, attention=AttentionConfig(num_blocks=3, model_dim=12, num_heads=3, ffn_dim=7)
    )
    detector = InstanceAdaptiveKeypointDetector.from_config(config)
    assert detector.keypoint_queries.shape == (5, 12)
    assert len(detector.attention_layer.blocks) == 3
    assert detector.attention_layer.blocks[0].cross_attention.num_heads == 3
    assert detector.attention_layer.blocks[0].ffn[0].out_features == 7
    bad = KeypointDetectorConfig(query_dim=12, attention=AttentionConfig(model_dim=16))
    with pytest.raises(ConfigError, match="model_dim 16 differs from query_dim 12"):
        InstanceAdaptiveKeypointDetector.from_config(bad)
