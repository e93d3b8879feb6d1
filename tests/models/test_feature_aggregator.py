"""Tests of the geometric-aware feature aggregator against a float64 oracle with brute-force kNN."""

import math

import pytest
import torch

from cleanpose.config import FeatureAggregatorConfig
from cleanpose.errors import ConfigError
from cleanpose.models.feature_aggregator import GeometricAwareFeatureAggregator, reference_key_map
from tests.models.test_attention import (
    assert_close,
    check_all_parameters_get_gradients,
    check_reference_keys,
    randomize_norms,
)


def _linear(layer, x):
    weight = layer.weight.double()
    if weight.ndim == 3:  # 1x1 Conv1d applied on the last axis
        weight = weight[..., 0]
    return x @ weight.T + layer.bias.double()


def _batch_norm(norm, x, training):
    # x: (B, L, C), statistics per channel over (B, L)
    if training:
        mean = x.mean(dim=(0, 1))
        variance = ((x - mean) ** 2).mean(dim=(0, 1))
    else:
        mean, variance = norm.running_mean.double(), norm.running_var.double()
    return (x - mean) / torch.sqrt(variance + norm.eps) * norm.weight.double() + norm.bias.double()


def _sequential(layers, x, training):
    for layer in layers:
        if isinstance(layer, torch.nn.BatchNorm1d):
            x = _batch_norm(layer, x, training)
        elif isinstance(layer, torch.nn.ReLU):
            x = x.clamp(min=0)
        else:
            x = _linear(layer, x)
    return x


def _brute_force_knn(keypoints, points, k):
    batch, num_keypoints = keypoints.shape[:2]
    index = torch.empty(batch, num_keypoints, k, dtype=torch.long)
    for b in range(batch):
        for i in range(num_keypoints):
            distances = [math.dist(keypoints[b, i].tolist(), points[b, n].tolist()) for n in range(points.shape[1])]
            index[b, i] = torch.tensor(sorted(range(len(distances)), key=lambda n: (distances[n], n))[:k])
    return index


def oracle_block(block, keypoint_features, keypoints, point_features, points, training=False):
    index = _brute_force_knn(keypoints, points, block.num_neighbors)
    batch_index = torch.arange(points.shape[0])[:, None, None]
    neighbor_points, neighbor_features = points[batch_index, index], point_features[batch_index, index]
    queries = _sequential(block.query_mlp, keypoint_features, training)
    offsets = _sequential(block.neighbor_position_mlp, keypoints.unsqueeze(2) - neighbor_points, training)
    neighbor_features = _sequential(block.neighbor_mlp, torch.cat([neighbor_features, offsets], -1), training)
    dot = (queries.unsqueeze(2) * neighbor_features).sum(-1)
    norms = queries.norm(dim=-1).unsqueeze(2) * neighbor_features.norm(dim=-1)
    weights = torch.softmax(dot / norms / block.tau, dim=2)
    features = ((weights.unsqueeze(-1) * neighbor_features).sum(2) + keypoint_features).clamp(min=0)
    num_keypoints = keypoints.shape[1]
    relative = torch.stack(
        [
            torch.stack([_sequential(block.relative_position_mlp, keypoints[:, i] - keypoints[:, j], training)
                         for j in range(num_keypoints)]).mean(0)
            for i in range(num_keypoints)
        ],
        dim=1,
    )  # fmt: skip
    position = _sequential(block.absolute_position_mlp, keypoints, training) + relative
    fused = torch.cat([features, features.mean(1, keepdim=True).expand_as(features), position], dim=-1)
    features = (_sequential(block.fuse_mlp, fused, training) + features).clamp(min=0)
    return (features + _sequential(block.output_mlp, features, training)).clamp(min=0)


def _inputs(generator, batch=2, num_keypoints=5, num_points=40, width=16, dtype=torch.float64):
    points = 0.1 * torch.randn(batch, num_points, 3, generator=generator, dtype=dtype)
    keypoints = 0.1 * torch.randn(batch, num_keypoints, 3, generator=generator, dtype=dtype)
    return (
        torch.randn(batch, num_keypoints, width, generator=generator, dtype=dtype),
        keypoints,
        torch.randn(batch, num_points, width, generator=generator, dtype=dtype),
        points,
    )


def test_reference_sizes_parameter_count_and_keys():
    aggregator = GeometricAwareFeatureAggregator()
    assert sum(p.numel() for p in aggregator.parameters()) == 1_945_088
    check_reference_keys(aggregator, reference_key_map(), "GAFA")


@pytest.mark.parametrize("training", [False, True])
def test_matches_float64_oracle(training):
    generator = torch.Generator().manual_seed(0)
    aggregator = GeometricAwareFeatureAggregator(num_neighbors=(3, 6), model_dim=16)
    randomize_norms(aggregator, generator)
    aggregator.double().train(training)
    inputs = _inputs(generator)
    with torch.no_grad():
        output = aggregator(*inputs)
        expected = inputs[0]
        for block in aggregator.blocks:
            expected = oracle_block(block, expected, *inputs[1:], training=training)
    assert_close(output, expected)


def test_duplicate_points_give_the_same_result_as_unique_ones():
    # Duplicated points (as the resampling makes) tie in the kNN; any tie order must give the same output.
    generator = torch.Generator().manual_seed(1)
    aggregator = GeometricAwareFeatureAggregator(num_neighbors=(4,), model_dim=8).double().eval()
    keypoint_features, keypoints, point_features, points = _inputs(generator, num_points=10, width=8)
    order = torch.randperm(20, generator=generator)
    doubled_points = torch.cat([points, points], 1)[:, order]
    doubled_features = torch.cat([point_features, point_features], 1)[:, order]
    with torch.no_grad():
        output = aggregator(keypoint_features, keypoints, doubled_features, doubled_points)
        expected = oracle_block(aggregator.blocks[0], keypoint_features, keypoints, doubled_features, doubled_points)
    assert_close(output, expected)


def test_float32_close_to_float64_gradients_and_determinism():
    generator = torch.Generator().manual_seed(2)
    aggregator = GeometricAwareFeatureAggregator(num_neighbors=(4, 8), model_dim=16)
    inputs = _inputs(generator, dtype=torch.float32)
    output = aggregator(*inputs)
    check_all_parameters_get_gradients(aggregator, (output * torch.randn(output.shape, generator=generator)).sum())
    reference = GeometricAwareFeatureAggregator(num_neighbors=(4, 8), model_dim=16).double().eval()
    reference.load_state_dict(aggregator.state_dict())
    aggregator.eval()
    with torch.no_grad():
        first, second = aggregator(*inputs), aggregator(*inputs)
        expected = reference(*(x.double() for x in inputs))
    assert torch.equal(first, second)
    assert_close(first, expected, atol=1e-5, rtol=1e-4)


def test_from_config():
    aggregator = GeometricAwareFeatureAggregator.from_config(
        FeatureAggregatorConfig(num_blocks=3, num_neighbors=(2, 3, 4), model_dim=8)
    )
    assert [block.num_neighbors for block in aggregator.blocks] == [2, 3, 4]
    assert aggregator.blocks[0].output_mlp[0].in_features == 8
    with pytest.raises(ConfigError, match="num_neighbors has 2 entries; num_blocks is 3"):
        FeatureAggregatorConfig(num_blocks=3, num_neighbors=(2, 3))
