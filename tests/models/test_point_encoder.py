"""PointNet2MSG: reference sizes and keys, float64 loop oracles for one SA and one FP level, gradients."""

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cleanpose.config import PointEncoderConfig
from cleanpose.models.point_encoder import (
    FeaturePropagation,
    PointNet2MSG,
    SetAbstractionMSG,
    reference_key_map,
    rows_layout,
)

TSV = Path("/work/shared/specs/cleanpose_state_dict_keys.tsv")


def apply_key_map(key: str, pairs: list[tuple[str, str]]) -> str:
    """Rename one key with (ours, reference) prefix patterns: match ours, fill its groups into reference."""
    for ours, reference in pairs:
        match = re.match(ours, key)
        if match:
            renamed = reference
            for group in match.groups():
                renamed = renamed.replace(r"(\d+)", group, 1)
            return renamed.replace("\\.", ".") + key[match.end() :]
    return key


def reference_rows(top: str) -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in TSV.read_text().splitlines()[1:]:
        key, shape, _, _, top_name, *_ = line.split("\t")
        if top_name == top:
            rows[key] = () if shape == "scalar" else tuple(int(size) for size in shape.split("x"))
    return rows


def randomize_batch_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    for sub in module.modules():
        if isinstance(sub, torch.nn.BatchNorm2d):
            size = sub.num_features
            sub.weight.data = torch.rand(size, generator=generator, dtype=sub.weight.dtype) + 0.5
            sub.bias.data = torch.randn(size, generator=generator, dtype=sub.bias.dtype) * 0.1
            sub.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            sub.running_var.copy_(torch.rand(size, generator=generator) + 0.5)


def mlp_oracle(inputs: np.ndarray, mlp: torch.nn.Module, training: bool) -> np.ndarray:
    """Shared MLP on rows of ``inputs`` (positions, C_in) in float64; BN over all rows when training."""
    x = inputs
    for layer in mlp.layers:
        weight = layer.conv.weight.detach().double().numpy()[:, :, 0, 0]
        z = x @ weight.T
        norm = layer.norm
        if training:
            mean, var = z.mean(0), z.var(0)
        else:
            mean, var = norm.running_mean.double().numpy(), norm.running_var.double().numpy()
        z = (z - mean) / np.sqrt(var + norm.eps) * norm.weight.detach().double().numpy()
        x = np.maximum(z + norm.bias.detach().double().numpy(), 0.0)
    return x


def greedy_fps(cloud: np.ndarray, count: int) -> list[int]:
    eligible = (cloud**2).sum(1) > 1e-3
    min_dist = np.full(len(cloud), np.inf)
    picks = [0]
    while len(picks) < count:
        min_dist = np.minimum(min_dist, ((cloud - cloud[picks[-1]]) ** 2).sum(1))
        picks.append(int(np.argmax(np.where(eligible, min_dist, -1.0))))
    return picks


def test_reference_sizes_parameter_count_and_keys_match_tsv():
    model = PointNet2MSG()
    assert sum(p.numel() for p in model.parameters()) == 1_307_808
    state = model.state_dict()
    assert len(state) == 192
    renamed = {"pts_extractor." + apply_key_map(key, reference_key_map()): tuple(v.shape) for key, v in state.items()}
    assert renamed == reference_rows("pts_extractor")


def test_reference_key_map_runs_both_ways():
    model = PointNet2MSG(
        num_centers=(8, 4),
        radii=((0.1,), (0.2,)),
        num_neighbors=((4,), (4,)),
        sa_channels=((4, 8), (8, 8)),
        fp_channels=((8,), (8,)),
    )
    inverse = [(reference, ours) for ours, reference in reference_key_map()]
    for key in model.state_dict():
        reference_key = apply_key_map(key, reference_key_map())
        assert reference_key != key
        assert apply_key_map(reference_key, inverse) == key


@pytest.mark.parametrize("training", [False, True])
def test_set_abstraction_level_matches_float64_loops(training):
    generator = torch.Generator().manual_seed(21)
    batch, num_points, channels = 2, 24, 2
    xyz = torch.rand(batch, num_points, 3, generator=generator, dtype=torch.float64) - 0.5
    features = torch.randn(batch, channels, num_points, generator=generator, dtype=torch.float64)
    level = SetAbstractionMSG(6, radii=(0.3, 0.6), num_neighbors=(4, 8), in_channels=channels, mlp_channels=(5, 4))
    randomize_batch_norms(level, generator)
    level = level.double().train(training)
    centers, pooled = level(xyz, features)

    xyz_np, features_np = xyz.numpy(), features.numpy()
    center_idx = [greedy_fps(xyz_np[b], 6) for b in range(batch)]
    np.testing.assert_array_equal(centers.detach().numpy(), np.stack([xyz_np[b][center_idx[b]] for b in range(batch)]))
    expected = []
    for radius, count, mlp in zip((0.3, 0.6), (4, 8), level.scales):
        rows = []  # (batch, centre, neighbour) order
        for b in range(batch):
            for m in center_idx[b]:
                center = xyz_np[b, m]
                found = [j for j in range(num_points) if ((xyz_np[b, j] - center) ** 2).sum() < radius**2][:count]
                found += [found[0]] * (count - len(found))
                for j in found:
                    rows.append(np.concatenate([xyz_np[b, j] - center, features_np[b, :, j]]))
        out = mlp_oracle(np.stack(rows), mlp, training).reshape(batch, 6, count, -1).max(axis=2)
        expected.append(out.transpose(0, 2, 1))
    np.testing.assert_allclose(pooled.detach().numpy(), np.concatenate(expected, axis=1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [False, True])
def test_feature_propagation_matches_float64_loops(training):
    generator = torch.Generator().manual_seed(22)
    batch, n, m, c_skip, c_coarse = 2, 10, 5, 3, 4
    fine = torch.rand(batch, n, 3, generator=generator, dtype=torch.float64)
    coarse = torch.rand(batch, m, 3, generator=generator, dtype=torch.float64)
    fine_features = torch.randn(batch, c_skip, n, generator=generator, dtype=torch.float64)
    coarse_features = torch.randn(batch, c_coarse, m, generator=generator, dtype=torch.float64)
    module = FeaturePropagation([c_coarse + c_skip, 6, 5])
    randomize_batch_norms(module, generator)
    module = module.double().train(training)
    got = module(fine, coarse, fine_features, coarse_features)

    rows = []
    for b in range(batch):
        for i in range(n):
            dist = np.sqrt(((coarse[b].numpy() - fine[b, i].numpy()) ** 2).sum(1))
            nearest = np.argsort(dist, kind="stable")[:3]
            weight = 1.0 / (dist[nearest] + 1e-8)
            weight /= weight.sum()
            interpolated = (coarse_features[b].numpy()[:, nearest] * weight).sum(1)
            rows.append(np.concatenate([interpolated, fine_features[b, :, i].numpy()]))
    expected = mlp_oracle(np.stack(rows), module.mlp, training).reshape(batch, n, -1).transpose(0, 2, 1)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def tiny_encoder() -> PointNet2MSG:
    return PointNet2MSG(
        num_centers=(32, 16, 8, 4),
        radii=((0.1, 0.2), (0.2, 0.4), (0.4, 0.8), (0.8, 1.6)),
        num_neighbors=((4, 8), (4, 8), (4, 8), (4, 8)),
        sa_channels=((4, 8), (8, 8), (8, 16), (16, 16)),
        fp_channels=((8, 6), (8, 8), (8, 8), (16, 16)),
    )


def test_full_encoder_output_and_gradients_reach_every_parameter():
    generator = torch.Generator().manual_seed(23)
    model = tiny_encoder().train()
    points = torch.rand(3, 64, 3, generator=generator) - 0.5
    out = model(points)
    assert out.shape == (3, 6, 64) and model.out_channels == 6
    assert bool((out >= 0).all())  # ends with a ReLU
    (out * torch.randn(out.shape, generator=generator)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_full_encoder_float32_agrees_with_float64():
    generator = torch.Generator().manual_seed(24)
    model = tiny_encoder().eval()
    randomize_batch_norms(model, generator)
    points = torch.rand(2, 64, 3, generator=generator) - 0.5
    out32 = model(points)
    out64 = model.double()(points.double())
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_rows_layout_under_bf16_autocast_computes_the_map_layout(training):
    # Under bf16 autocast the shared MLPs run on (points, channels) rows. Autocast leaves float64 alone, so in
    # float64 the two layouts must agree to rounding: outputs, gradients and BatchNorm running statistics.
    generator = torch.Generator().manual_seed(25)
    maps = tiny_encoder()
    randomize_batch_norms(maps, generator)
    maps = maps.double().train(training)
    rows = copy.deepcopy(maps)
    points = torch.rand(2, 64, 3, generator=generator, dtype=torch.float64) - 0.5
    weights = torch.randn(2, 6, 64, generator=generator, dtype=torch.float64)
    assert not rows_layout(points)
    expected = maps(points)
    (expected * weights).sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rows_layout(points)
        got = rows(points)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    (got * weights).sum().backward()
    for (name, actual), reference in zip(rows.named_parameters(), maps.parameters()):
        torch.testing.assert_close(actual.grad, reference.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, actual), reference in zip(rows.named_buffers(), maps.buffers()):
        torch.testing.assert_close(actual, reference, rtol=1e-10, atol=1e-12, msg=name)


def test_from_config_builds_the_configured_levels():
    config = PointEncoderConfig(
        num_centers=(16, 8),
        radii=((0.1, 0.2), (0.3,)),
        num_neighbors=((4, 6), (5,)),
        sa_channels=((4, 6), (8,)),
        fp_channels=((7,), (9, 3)),
    )
    model = PointNet2MSG.from_config(config)
    levels = model.set_abstraction
    assert [level.num_centers for level in levels] == [16, 8]
    assert [level.radii for level in levels] == [[0.1, 0.2], [0.3]]
    assert [level.num_neighbors for level in levels] == [[4, 6], [5]]
    # Level 0: 2 scales of 3 -> 4 -> 6 (12 channels); level 1: 1 scale of 12 + 3 -> 8.
    assert levels[0].out_channels == 12 and levels[1].out_channels == 8
    assert levels[1].scales[0].layers[0].conv.weight.shape == (8, 15, 1, 1)
    # FP 1: level-2 features (8) + level-1 skip (12) -> 9 -> 3; FP 0: 3 + no skip -> 7.
    assert model.feature_propagation[1].mlp.layers[0].conv.weight.shape == (9, 20, 1, 1)
    assert model.feature_propagation[0].mlp.layers[0].conv.weight.shape == (7, 3, 1, 1)
    assert model.out_channels == config.out_dim == 7


def test_errors():
    with pytest.raises(ValueError, match=r"points has shape \(64, 3\); expected \(B, N, 3\)"):
        tiny_encoder()(torch.zeros(64, 3))
    with pytest.raises(ValueError, match="have lengths 2, 1, 2, 2, 2"):
        PointNet2MSG(
            num_centers=(8, 4),
            radii=((0.1,),),
            num_neighbors=((4,), (4,)),
            sa_channels=((4,), (4,)),
            fp_channels=((4,), (4,)),
        )


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    torch.manual_seed(0)  # test-side seeding of the modules' default init
    model = PointNet2MSG(num_centers=(8, 4), radii=((0.1,), (0.2,)), num_neighbors=((4,), (4,)),
                         sa_channels=((4, 8), (8, 8)), fp_channels=((8,), (8,))).eval()  # fmt: skip
    points = torch.rand(2, 32, 3, generator=torch.Generator().manual_seed(1)) * 0.2
    expected = model(points)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = model(points)
    torch.testing.assert_close(actual.float(), expected, rtol=0.05, atol=0.05)
