"""Tests of the pose and size head: float64 oracle with an explicitly written 6-D -> rotation map."""

import torch

from cleanpose.models.pose_head import PoseSizeEstimator, reference_key_map
from tests.models.test_attention import assert_close, check_all_parameters_get_gradients, check_reference_keys
from tests.models.test_feature_aggregator import _sequential


def _rotation_from_6d(r6):
    """y = b/|b|, z = (a x y)/|a x y|, x = y x z, columns [x | y | z] (docs/model.md §10), written out per object."""
    rotations = []
    for a, b in zip(r6[:, :3], r6[:, 3:]):
        y = b / max(float(b.norm()), 1e-8)
        cross = torch.stack([a[1] * y[2] - a[2] * y[1], a[2] * y[0] - a[0] * y[2], a[0] * y[1] - a[1] * y[0]])
        z = cross / max(float(cross.norm()), 1e-8)
        x = torch.stack([y[1] * z[2] - y[2] * z[1], y[2] * z[0] - y[0] * z[2], y[0] * z[1] - y[1] * z[0]])
        rotations.append(torch.stack([x, y, z], dim=1))
    return torch.stack(rotations)


def test_reference_sizes_parameter_count_and_keys():
    head = PoseSizeEstimator()
    assert sum(p.numel() for p in head.parameters()) == 2_043_276
    check_reference_keys(head, reference_key_map(), "estimator")


def test_matches_float64_oracle():
    generator = torch.Generator().manual_seed(0)
    head = PoseSizeEstimator(model_dim=8).double()
    keypoints = 0.1 * torch.randn(3, 5, 3, generator=generator, dtype=torch.float64)
    nocs = 0.3 * torch.randn(3, 5, 3, generator=generator, dtype=torch.float64)
    features = torch.randn(3, 5, 8, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        rotation, translation, size = head(keypoints, nocs, features)
        local = torch.cat([_sequential(head.keypoint_mlp, keypoints, False), features,
                           _sequential(head.nocs_mlp, nocs, False)], dim=-1)  # fmt: skip
        local = _sequential(head.local_mlp, local, False)
        hidden = torch.cat([local, local.mean(dim=1, keepdim=True).expand_as(local)], dim=-1)
        pooled = _sequential(head.global_mlp[:4], hidden, False).mean(dim=1)
        r6 = _sequential(head.rotation_head, pooled, False)
    assert_close(rotation, _rotation_from_6d(r6))
    assert_close(translation, _sequential(head.translation_head, pooled, False))
    assert_close(size, _sequential(head.size_head, pooled, False))
    assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3))
    assert_close(torch.linalg.det(rotation), torch.ones(3, dtype=torch.float64))


def test_nocs_input_is_detached_and_gradients_reach_all_parameters():
    generator = torch.Generator().manual_seed(1)
    head = PoseSizeEstimator(model_dim=8)
    keypoints = torch.randn(2, 5, 3, generator=generator, requires_grad=True)
    nocs = torch.randn(2, 5, 3, generator=generator, requires_grad=True)
    features = torch.randn(2, 5, 8, generator=generator, requires_grad=True)
    rotation, translation, size = head(keypoints, nocs, features)
    check_all_parameters_get_gradients(head, rotation.sum() + translation.square().sum() + size.abs().sum())
    assert nocs.grad is None
    assert keypoints.grad is not None and features.grad is not None
    head.eval()
    with torch.no_grad():
        assert torch.equal(head(keypoints, nocs, features).rotation, head(keypoints, nocs, features).rotation)
