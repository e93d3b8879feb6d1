"""Tests of the shape reconstructor: float64 decoder oracle and the explicit row layout."""

import torch

from cleanpose.config import ReconstructorConfig
from cleanpose.models.reconstructor import Reconstructor, reference_key_map
from tests.models.test_attention import assert_close, check_all_parameters_get_gradients, check_reference_keys
from tests.models.test_feature_aggregator import _sequential


def test_reference_sizes_parameter_count_and_keys():
    reconstructor = Reconstructor()
    assert sum(p.numel() for p in reconstructor.parameters()) == 713_886
    check_reference_keys(reconstructor, reference_key_map(), "reconstructor")


def test_matches_float64_oracle_with_explicit_row_layout():
    generator = torch.Generator().manual_seed(0)
    reconstructor = Reconstructor(points_per_keypoint=4, model_dim=8, hidden_dim=12).double()
    keypoints = 0.1 * torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    features = torch.randn(2, 5, 8, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        points, deltas = reconstructor(keypoints, features)
        position = _sequential(reconstructor.position_encoder, keypoints, training=False)
        hidden = _sequential(reconstructor.feature_mlp, features, training=False)
        global_feature = (position + hidden).mean(dim=1, keepdim=True).expand_as(hidden)
        decoded = _sequential(reconstructor.shape_decoder, torch.cat([global_feature, hidden], -1), training=False)
    expected_deltas = torch.empty(2, 20, 3, dtype=torch.float64)
    expected_points = torch.empty(2, 20, 3, dtype=torch.float64)
    for b in range(2):
        for j in range(5):
            for m in range(4):
                for axis in range(3):
                    expected_deltas[b, 4 * j + m, axis] = decoded[b, j, 3 * m + axis]
                    expected_points[b, 4 * j + m, axis] = decoded[b, j, 3 * m + axis] + keypoints[b, j, axis]
    assert_close(deltas, expected_deltas)
    assert_close(points, expected_points)


def test_gradients_float32_and_determinism():
    generator = torch.Generator().manual_seed(1)
    reconstructor = Reconstructor(points_per_keypoint=3, model_dim=8, hidden_dim=12)
    keypoints = torch.randn(2, 6, 3, generator=generator, requires_grad=True)
    features = torch.randn(2, 6, 8, generator=generator)
    points, deltas = reconstructor(keypoints, features)
    reference = Reconstructor(points_per_keypoint=3, model_dim=8, hidden_dim=12).double()
    reference.load_state_dict(reconstructor.state_dict())
    with torch.no_grad():
        expected = reference(keypoints.double(), features.double())
    assert_close(points, expected.points, atol=1e-6, rtol=1e-5)
    check_all_parameters_get_gradients(reconstructor, points.square().sum() + deltas.abs().sum())
    assert keypoints.grad is not None
    with torch.no_grad():
        assert torch.equal(reconstructor(keypoints, features).points, reconstructor(keypoints, features).points)


def test_from_config():
    reconstructor = Reconstructor.from_config(ReconstructorConfig(points_per_keypoint=7, model_dim=32))
    assert reconstructor.shape_decoder[4].out_channels == 21
    assert reconstructor.feature_mlp[0].in_channels == 32
    assert reconstructor.points_per_keypoint == 7
