"""Tests of cleanpose.models.distillation against float64 oracles written with explicit loops."""

import argparse
import copy
import math

import pytest
import torch

from cleanpose.config import DistillationConfig
from cleanpose.errors import CheckpointError
from cleanpose.models.distillation import (
    PointBERTTeacher,
    PointNet2SSGTeacher,
    ResidualDistillationHead,
    _ball_query_inclusive,
    _random_start_furthest_point_sample,
    build_teacher,
    channel_dropout,
    drop_path,
    dropout,
    load_ulip_checkpoint,
    map_keys,
)

TINY_BERT = dict(trans_dim=16, depth=2, num_heads=2, num_groups=6, group_size=4, encoder_dims=12, drop_path_rate=0.2)
TINY_SSG = dict(
    num_centers=(8, 4), radii=(0.2, 0.4), num_samples=(4, 3), channels=((6, 6, 8), (8, 8, 10), (10, 12, 14)), out_dim=5
)


def _cloud(batch, num_points, seed, scale=0.1):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, num_points, 3, generator=generator) * scale
    # Keep clear of the FPS near-origin skip except where a test wants it.
    return points + torch.sign(points) * 0.05


def _randomise(module, seed):
    """Give every parameter and BN buffer non-trivial values (reproducibly)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.dtype != torch.float32:
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)


# ------------------------------------------------------------------------------------------ oracles


def _fps_oracle(points):
    """Votenet FPS for generic data: start 0, skip x²+y²+z² <= 1e-3, first maximum."""
    picks = [0]
    temp = [1e10] * len(points)
    for _ in range(1, len(points)):
        last = points[picks[-1]]
        best, best_index = -1.0, 0
        for index, point in enumerate(points):
            if float((point**2).sum()) <= 1e-3:
                continue
            temp[index] = min(temp[index], float(((point - last) ** 2).sum()))
            if temp[index] > best:
                best, best_index = temp[index], index
        picks.append(best_index)
    return picks


def _batch_norm(x, module, training):
    """float64 BatchNorm over every axis but 1."""
    weight, bias = module.weight.double(), module.bias.double()
    shape = [1, -1] + [1] * (x.dim() - 2)
    if training:
        axes = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=axes, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    else:
        mean, var = module.running_mean.double().view(shape), module.running_var.double().view(shape)
    return (x - mean) / torch.sqrt(var + module.eps) * weight.view(shape) + bias.view(shape)


def _conv1(x, conv):
    """1x1 convolution over axis 1 in float64."""
    out = torch.einsum("oc,bc...->bo...", conv.weight.double().flatten(1), x)
    return out + conv.bias.double().view([1, -1] + [1] * (x.dim() - 2))


def _linear(x, layer):
    out = x @ layer.weight.double().T
    return out + layer.bias.double() if layer.bias is not None else out


def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _attention_oracle(x, attention):
    """Per-head loops: softmax(q k^T / sqrt(d)) v, then proj."""
    batch, tokens, dim = x.shape
    heads = attention.num_heads
    head_dim = dim // heads
    qkv = x @ attention.qkv.weight.double().T  # (B, T, 3D), laid out [q; k; v] x heads x head_dim
    out = torch.zeros_like(x)
    for h in range(heads):
        q = qkv[..., h * head_dim : (h + 1) * head_dim]
        k = qkv[..., dim + h * head_dim : dim + (h + 1) * head_dim]
        v = qkv[..., 2 * dim + h * head_dim : 2 * dim + (h + 1) * head_dim]
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(head_dim), dim=-1)
        out[..., h * head_dim : (h + 1) * head_dim] = weights @ v
    return _linear(out, attention.proj)


def _pointbert_oracle(teacher, points, training, masks=None):
    """The whole PointBERT forward in float64 with explicit grouping loops."""
    batch = points.shape[0]
    groups, centers = [], []
    for b in range(batch):
        cloud = points[b].double()
        picks = _fps_oracle(cloud)[: teacher.num_groups]
        center = cloud[picks]
        members = []
        for c in center:
            distances = [float(((p - c) ** 2).sum()) for p in cloud]
            nearest = sorted(range(len(cloud)), key=lambda i: distances[i])[: teacher.group_size]
            members.append(cloud[nearest] - c)
        groups.append(torch.stack(members))
        centers.append(center)
    groups, centers = torch.stack(groups), torch.stack(centers)  # (B, G, S, 3), (B, G, 3)
    encoder = teacher.patch_encoder
    x = groups.reshape(-1, teacher.group_size, 3).transpose(1, 2)
    x = _conv1(x, encoder.first_conv[0])
    x = torch.relu(_batch_norm(x, encoder.first_conv[1], training))
    x = _conv1(x, encoder.first_conv[3])
    x = torch.cat([x.max(dim=2, keepdim=True).values.expand_as(x), x], dim=1)  # max first
    x = _conv1(x, encoder.second_conv[0])
    x = torch.relu(_batch_norm(x, encoder.second_conv[1], training))
    x = _conv1(x, encoder.second_conv[3]).max(dim=2).values.reshape(batch, teacher.num_groups, -1)
    x = _linear(x, teacher.reduce_dim)
    x = torch.cat([teacher.cls_token.double().expand(batch, -1, -1), x], dim=1)
    pos = _linear(_gelu(_linear(centers, teacher.pos_embed[0])), teacher.pos_embed[2])
    pos = torch.cat([teacher.cls_pos.double().expand(batch, -1, -1), pos], dim=1)
    for index, block in enumerate(teacher.blocks):
        x = x + pos
        attn_mask, mlp_mask = masks[index] if masks is not None else (1.0, 1.0)
        x = x + attn_mask * _attention_oracle(_layer_norm(x, block.norm1), block.attn)
        hidden = _gelu(_linear(_layer_norm(x, block.norm2), block.mlp.fc1))
        x = x + mlp_mask * _linear(hidden, block.mlp.fc2)
    x = _layer_norm(x, teacher.norm)
    return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)


def _assert_close(actual, expected, rtol=2e-5):
    scale = expected.abs().max().item()
    error = (actual.double() - expected).abs().max().item()
    assert error <= rtol * scale, f"max abs error {error:.3e} vs max |expected| {scale:.3e}"


# --------------------------------------------------------------------------------------- student


def test_residual_head_matches_formula():
    head = ResidualDistillationHead(student_dim=8, feature_dim=5, residual_weight=0.1)
    _randomise(head, 1)
    features = torch.randn(3, 8, 7, generator=torch.Generator().manual_seed(2))
    pooled = features.double().mean(dim=2)
    pooled = pooled / torch.sqrt((pooled**2).sum(-1, keepdim=True))
    w0, w2 = head.projector[0].weight.double(), head.projector[2].weight.double()
    expected = (pooled + 0.1 * (_gelu(pooled @ w0.T) @ w2.T)) @ head.projection.double()
    _assert_close(head(features), expected)


def test_residual_head_initialisation():
    head = ResidualDistillationHead(student_dim=128, feature_dim=768)
    head.reset_parameters(torch.Generator().manual_seed(0))
    assert torch.count_nonzero(head.projector[2].weight) == 0
    assert head.projector[0].bias is None and head.projector[2].bias is None
    # kaiming_normal_ (fan_in 128, leaky_relu a=0): std sqrt(2/128); projection std 768^-0.5.
    assert head.projector[0].weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    assert head.projection.std().item() == pytest.approx(768**-0.5, rel=0.05)
    assert sum(p.numel() for p in head.parameters()) == 131072
    # With the zero second layer the residual vanishes: output = normalised pool @ projection.
    features = torch.rand(2, 128, 9, generator=torch.Generator().manual_seed(3))
    pooled = features.mean(2)
    expected = (pooled / pooled.norm(dim=1, keepdim=True)).double() @ head.projection.double()
    _assert_close(head(features), expected)


def test_residual_head_key_map():
    head = ResidualDistillationHead()
    renamed = map_keys(list(head.state_dict()), head.reference_key_map(), to_reference=True)
    assert renamed == {
        "projector.0.weight": "projector_pts.0.weight",
        "projector.2.weight": "projector_pts.2.weight",
        "projection": "pointnet2ulip",
    }
    back = map_keys(list(renamed.values()), head.reference_key_map(), to_reference=False)
    assert back == {value: key for key, value in renamed.items()}


# --------------------------------------------------------------------------------------- drop path


def test_drop_path_draws_from_the_generator():
    x = torch.randn(6, 3, 2, generator=torch.Generator().manual_seed(0))
    out = drop_path(x, 0.25, True, torch.Generator().manual_seed(7))
    mask = torch.empty(6, 1, 1).bernoulli_(0.75, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, x * mask / 0.75)
    assert torch.equal(drop_path(x, 0.25, False, None), x)
    assert torch.equal(drop_path(x, 0.0, True, None), x)
    with pytest.raises(ValueError, match=r"drop_path: a torch.Generator is required in train mode"):
        drop_path(x, 0.25, True, None)


def test_dropout_draws_from_the_generator():
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    out = dropout(x, 0.4, True, torch.Generator().manual_seed(7))
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(dropout(x, 0.4, True, torch.Generator().manual_seed(7)), out)
    mask = torch.empty(4, 5).bernoulli_(0.6, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, x * mask / 0.6)
    assert 0 < int((out == 0).sum()) < 20
    assert torch.equal(dropout(x, 0.4, False, None), x)
    assert torch.equal(dropout(x, 0.0, True, None), x)
    with pytest.raises(ValueError, match=r"dropout: a torch.Generator is required in train mode"):
        dropout(x, 0.4, True, None)


def test_channel_dropout_zeroes_whole_channels_drawn_from_the_generator():
    x = torch.randn(3, 4, 2, 5, generator=torch.Generator().manual_seed(0))
    out = channel_dropout(x, 0.3, True, torch.Generator().manual_seed(9))
    mask = torch.empty(3, 4, 1, 1).bernoulli_(0.7, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, x * mask / 0.7)
    assert 0 < int(mask.sum()) < 12
    assert torch.equal(channel_dropout(x, 0.3, False, None), x)
    with pytest.raises(ValueError, match=r"channel_dropout: a torch.Generator is required in train mode"):
        channel_dropout(x, 0.3, True, None)


# --------------------------------------------------------------------------------------- PointBERT


def test_pointbert_grouping_matches_explicit_loops():
    teacher = PointBERTTeacher(**TINY_BERT)
    points = _cloud(2, 20, seed=4)
    points[0, 5] = torch.tensor([0.01, 0.01, 0.0])  # near the origin: never a centre (except index 0)
    neighborhoods, centers = teacher.group(points)
    for b in range(2):
        cloud = points[b].double()
        picks = _fps_oracle(cloud)[: teacher.num_groups]
        assert 5 not in picks or b == 1
        torch.testing.assert_close(centers[b].double(), cloud[picks])
        for g, c in enumerate(cloud[picks]):
            distances = ((cloud - c) ** 2).sum(-1)
            nearest = torch.argsort(distances)[: teacher.group_size]
            expected = sorted(map(tuple, (cloud[nearest] - c).tolist()))
            actual = sorted(map(tuple, neighborhoods[b, g].double().tolist()))
            torch.testing.assert_close(torch.tensor(actual), torch.tensor(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_pointbert_forward_matches_float64_oracle(mode):
    teacher = PointBERTTeacher(**TINY_BERT, mode=mode)
    _randomise(teacher, 5)
    points = _cloud(3, 24, seed=6)
    if mode == "eval":
        teacher.train()  # mode='eval' stays in eval even when the parent trains
        assert not teacher.training
        expected = _pointbert_oracle(teacher, points, training=False)
        _assert_close(teacher(points), expected)
        return
    teacher.train()
    assert teacher.training
    running_before = teacher.patch_encoder.first_conv[1].running_mean.clone()
    expected_masks = []
    draws = torch.Generator().manual_seed(11)
    for block in teacher.blocks:  # draw order: attention branch, then MLP branch, per block
        keep = 1 - block.drop_path_rate
        pair = []
        for _ in range(2):
            mask = (
                torch.empty(3, 1, 1).bernoulli_(keep, generator=draws) / keep
                if block.drop_path_rate > 0
                else torch.ones(3, 1, 1)
            )
            pair.append(mask.double())
        expected_masks.append(pair)
    expected = _pointbert_oracle(teacher, points, training=True, masks=expected_masks)
    actual = teacher(points, torch.Generator().manual_seed(11))
    _assert_close(actual, expected)
    # Train mode updates the BatchNorm running statistics, as the reference's train-mode teacher does.
    assert not torch.equal(running_before, teacher.patch_encoder.first_conv[1].running_mean)


@pytest.mark.parametrize("training", [False, True])
def test_pointbert_patch_encoder_rows_layout_computes_the_map_layout(training):
    # Under bf16 autocast the mini-PointNet runs on (points, channels) rows; in float64 (which autocast leaves
    # alone) it must agree with the (groups, channels, points) layout, BatchNorm running statistics included.
    generator = torch.Generator().manual_seed(31)
    maps = PointBERTTeacher(mode="train").patch_encoder.double().train(training)
    for norm in (maps.first_conv[1], maps.second_conv[1]):
        norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
        norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    rows = copy.deepcopy(maps)
    groups = torch.randn(2, 5, 32, 3, generator=generator, dtype=torch.float64) * 0.02
    expected = maps(groups)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rows(groups)
    assert got.shape == (2, 5, 256) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    for (name, actual), reference in zip(rows.named_buffers(), maps.buffers()):
        torch.testing.assert_close(actual, reference, rtol=1e-10, atol=1e-12, msg=name)


def test_pointbert_train_mode_needs_a_generator():
    teacher = PointBERTTeacher(**TINY_BERT)
    teacher.train()
    with pytest.raises(ValueError, match=r"a torch.Generator is required"):
        teacher(_cloud(1, 24, seed=0))


def test_pointbert_parameter_count_and_keys_at_reference_size():
    with torch.device("meta"):
        teacher = PointBERTTeacher()
    assert sum(p.numel() for p in teacher.parameters()) == 21_858_816
    renamed = map_keys(list(teacher.state_dict()), teacher.reference_key_map(), to_reference=True)
    assert len(renamed) == 160
    assert renamed["blocks.11.attn.qkv.weight"] == "blocks.blocks.11.attn.qkv.weight"
    assert renamed["patch_encoder.second_conv.1.running_var"] == "encoder.second_conv.1.running_var"
    assert renamed["cls_pos"] == "cls_pos"
    assert tuple(teacher.state_dict()["blocks.0.attn.qkv.weight"].shape) == (1152, 384)
    assert [round(block.drop_path_rate, 6) for block in teacher.blocks] == [round(0.1 * i / 11, 6) for i in range(12)]


def test_teachers_are_frozen():
    teacher = PointBERTTeacher(**TINY_BERT, mode="eval")
    head = ResidualDistillationHead(student_dim=4, feature_dim=2 * TINY_BERT["trans_dim"])
    _randomise(head, 0)
    assert all(not p.requires_grad for p in teacher.parameters())
    points = _cloud(2, 24, seed=1)
    features = torch.randn(2, 4, 24, requires_grad=True)
    loss = (head(features) - teacher(points)).norm(dim=-1).mean()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for name, p in head.named_parameters()
        if name != "projector.0.weight"
    )


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", ["pointbert", "pointnet2_ssg"])
def test_features_are_forward_with_correct_gradients_for_every_parameter(name, mode):
    # features() is forward() with autograd: the same values bit for bit, a nonzero gradient in every
    # parameter, and that gradient along a random direction equals a float64 central difference.
    cls, sizes, num_points = {
        "pointbert": (PointBERTTeacher, TINY_BERT, 24),
        "pointnet2_ssg": (PointNet2SSGTeacher, TINY_SSG, 16),
    }[name]
    teacher = cls(**sizes, mode=mode)
    _randomise(teacher, 21)
    teacher.train()
    points = _cloud(3, num_points, seed=22, scale=0.15)
    # Unfrozen first: matmul may take another (last-bit different) path when a weight requires grad.
    for parameter in teacher.parameters():
        parameter.requires_grad_(True)
    expected = teacher(points, torch.Generator().manual_seed(3))
    assert torch.equal(teacher.features(points, torch.Generator().manual_seed(3)), expected)

    teacher.double()
    draws = torch.Generator().manual_seed(23)
    weights = torch.randn(expected.shape, generator=draws, dtype=torch.float64)

    def loss():  # the same DropPath / Dropout masks and FPS starts on every call
        return (teacher.features(points.double(), torch.Generator().manual_seed(3)) * weights).sum()

    loss().backward()
    named = list(teacher.named_parameters())
    assert [name for name, p in named if p.grad is None or not p.grad.abs().sum() > 0] == []
    direction = [torch.randn(p.shape, generator=draws, dtype=torch.float64) for _, p in named]
    analytic = sum(float((p.grad * d).sum()) for (_, p), d in zip(named, direction))
    step = 1e-7  # small enough that no ReLU or max switches sides on these seeds
    with torch.no_grad():
        for (_, p), d in zip(named, direction):
            p.add_(step * d)
        plus = float(loss())
        for (_, p), d in zip(named, direction):
            p.sub_(2 * step * d)
        minus = float(loss())
    assert (plus - minus) / (2 * step) == pytest.approx(analytic, rel=1e-6)


# --------------------------------------------------------------------------------------- checkpoints


class _NotAllowlisted:
    """A class weights_only loading refuses."""


def _official_file(path, teacher, extra_keys=(), drop=(), args=True):
    renamed = map_keys(list(teacher.state_dict()), teacher.reference_key_map(), to_reference=True)
    state = {
        f"module.point_encoder.{renamed[key]}": value.clone()
        for key, value in teacher.state_dict().items()
        if key not in drop
    }
    state["module.visual.blocks.0.attn.qkv.weight"] = torch.zeros(3, 2)
    state["module.transformer.resblocks.0.ln_1.weight"] = torch.ones(2)
    state["module.pc_projection"] = torch.zeros(2 * TINY_BERT["trans_dim"], 4)
    state["module.logit_scale"] = torch.tensor(2.0)
    for key in extra_keys:
        state[key] = torch.zeros(1)
    checkpoint = {"epoch": 3, "state_dict": state, "best_acc1": 60.1, "optimizer": {"state": {}, "param_groups": []}}
    if args:
        checkpoint["args"] = argparse.Namespace(model="ULIP_PointBERT", lr=1e-3)
    torch.save(checkpoint, path)


def test_load_official_pointbert_checkpoint_round_trip(tmp_path):
    source = PointBERTTeacher(**TINY_BERT, mode="eval")
    _randomise(source, 8)
    path = tmp_path / "ulip2_pointbert.pt"
    _official_file(path, source)
    target = PointBERTTeacher(**TINY_BERT, mode="eval")
    load_ulip_checkpoint(path, target)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    points = _cloud(2, 24, seed=9)
    assert torch.equal(target(points), source(points))


def test_load_checkpoint_errors(tmp_path):
    teacher = PointBERTTeacher(**TINY_BERT, mode="eval")
    with pytest.raises(CheckpointError, match=r"missing.pt: ULIP checkpoint not found"):
        load_ulip_checkpoint(tmp_path / "missing.pt", teacher)

    path = tmp_path / "dropped.pt"
    _official_file(path, teacher, drop=("blocks.1.attn.qkv.weight",))
    with pytest.raises(
        CheckpointError,
        match=r"dropped.pt: point encoder does not match PointBERTTeacher; "
        r"missing keys: point_encoder.blocks.blocks.1.attn.qkv.weight$",
    ):
        load_ulip_checkpoint(path, teacher)

    path = tmp_path / "extra.pt"
    _official_file(path, teacher, extra_keys=("module.point_encoder.cls_head_finetune.0.weight",))
    with pytest.raises(CheckpointError, match=r"unexpected keys: point_encoder.cls_head_finetune.0.weight"):
        load_ulip_checkpoint(path, teacher)

    bigger = PointBERTTeacher(**{**TINY_BERT, "trans_dim": 20, "num_heads": 2}, mode="eval")
    path = tmp_path / "bigger.pt"
    _official_file(path, bigger)
    with pytest.raises(
        CheckpointError,
        match=r"bigger.pt: shape mismatch \(checkpoint vs teacher\): cls_token \(1, 1, 20\) vs \(1, 1, 16\)",
    ):
        load_ulip_checkpoint(path, teacher)

    path = tmp_path / "text_only.pt"
    torch.save({"state_dict": {"module.logit_scale": torch.tensor(1.0)}}, path)
    with pytest.raises(CheckpointError, match=r"text_only.pt: no 'point_encoder.\*' keys; is this a ULIP checkpoint\?"):
        load_ulip_checkpoint(path, teacher)

    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": {}, "hook": _NotAllowlisted()}, path)
    with pytest.raises(CheckpointError, match=r"unsafe.pt: cannot be read with weights_only=True"):
        load_ulip_checkpoint(path, teacher)

    path = tmp_path / "list.pt"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=r"list.pt: expected a dict with a 'state_dict' entry"):
        load_ulip_checkpoint(path, teacher)


def test_bare_state_dict_and_build_teacher(tmp_path):
    source = PointNet2SSGTeacher(**TINY_SSG)
    _randomise(source, 12)
    path = tmp_path / "ssg_bare.pt"
    torch.save({f"point_encoder.{key}": value for key, value in source.state_dict().items()}, path)
    target = PointNet2SSGTeacher(**TINY_SSG)
    load_ulip_checkpoint(path, target)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    assert build_teacher(DistillationConfig(teacher="none")) is None
    with pytest.raises(CheckpointError, match=r"nowhere.pt: ULIP checkpoint not found"):
        build_teacher(DistillationConfig(teacher="pointnet2_ssg", teacher_checkpoint=str(tmp_path / "nowhere.pt")))


# --------------------------------------------------------------------------------------- PointNet2-SSG


def test_random_start_fps_matches_loop():
    points = _cloud(2, 15, seed=13)
    samples = _random_start_furthest_point_sample(points, 6, torch.Generator().manual_seed(3))
    starts = torch.randint(0, 15, (2,), generator=torch.Generator().manual_seed(3))
    for b in range(2):
        cloud = points[b].double()
        picks, distance = [int(starts[b])], [1e10] * 15
        for _ in range(5):
            for i in range(15):
                distance[i] = min(distance[i], float(((cloud[i] - cloud[picks[-1]]) ** 2).sum()))
            picks.append(max(range(15), key=lambda i: (distance[i], -i)))
        assert samples[b].tolist() == picks
    assert _random_start_furthest_point_sample(points, 3, None)[:, 0].tolist() == [0, 0]


def test_inclusive_ball_query_matches_loop():
    points = torch.tensor([[[0.0, 0, 0], [0.3, 0, 0], [0.1, 0, 0], [0.0, 0.5, 0], [0.0, 0.25, 0.0]]])
    centers = torch.tensor([[[0.0, 0, 0], [0.0, 0.5, 0], [2.0, 0, 0]]])
    idx = _ball_query_inclusive(0.25, 3, points, centers)
    # Centre 0: points 0, 2 and 4 lie within 0.25 (4 exactly on the sphere, all values exact in float32;
    # d² <= r² includes it). Centre 1: points 3 and 4 (on the sphere), padded with the first.
    # Centre 2: nothing; as in ULIP the row keeps the sentinel N (cannot happen in use: every centre is
    # one of the points).
    assert idx[0, 0].tolist() == [0, 2, 4]
    assert idx[0, 1].tolist() == [3, 4, 3]
    assert idx[0, 2].tolist() == [5, 5, 5]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_pointnet2_ssg_forward_matches_float64_oracle(mode):
    teacher = PointNet2SSGTeacher(**TINY_SSG, mode=mode)
    _randomise(teacher, 14)
    teacher.train()
    training = mode == "train"
    assert teacher.training == training
    points = _cloud(2, 16, seed=15, scale=0.15)
    actual = teacher(points, torch.Generator().manual_seed(5))
    starts = torch.Generator().manual_seed(5)  # FPS start points of sa1, sa2, then the two dropout masks
    masks = []

    def drop(x):
        if not training:
            return x
        masks.append(torch.empty(x.shape).bernoulli_(0.6, generator=starts).double())
        return x * masks[-1] / 0.6

    # Compose the oracle from the loop-checked sampling pieces, evaluated in float64.
    def sa(module, xyz, features):
        index = _random_start_furthest_point_sample(xyz.float(), module.num_centers, starts)
        new_xyz = torch.stack([xyz[b, index[b]] for b in range(xyz.shape[0])])
        ball = _ball_query_inclusive(module.radius, module.num_samples, xyz.float(), new_xyz.float())
        grouped = torch.stack([xyz[b][ball[b]] - new_xyz[b][:, None] for b in range(xyz.shape[0])])
        if features is not None:
            grouped = torch.cat([grouped, torch.stack([features[b][ball[b]] for b in range(xyz.shape[0])])], dim=-1)
        x = grouped.permute(0, 3, 2, 1)
        for conv, norm in zip(module.mlp_convs, module.mlp_bns):
            x = torch.relu(_batch_norm(_conv1(x, conv), norm, training))
        return new_xyz, x.max(dim=2).values.transpose(1, 2)

    xyz, features = sa(teacher.sa1, points.double(), None)
    xyz, features = sa(teacher.sa2, xyz, features)
    x = torch.cat([xyz, features], dim=-1).unsqueeze(1).permute(0, 3, 2, 1)
    for conv, norm in zip(teacher.sa3.mlp_convs, teacher.sa3.mlp_bns):
        x = torch.relu(_batch_norm(_conv1(x, conv), norm, training))
    x = x.max(dim=2).values.reshape(2, -1)
    x = drop(torch.relu(_batch_norm(_linear(x, teacher.fc1), teacher.bn1, training)))
    expected = drop(torch.relu(_batch_norm(_linear(x, teacher.fc2), teacher.bn2, training)))
    assert len(masks) == (2 if training else 0) and all(0 < mask.sum() < mask.numel() for mask in masks)
    _assert_close(actual, expected)


def test_pointnet2_ssg_size_and_official_keys():
    with torch.device("meta"):
        teacher = PointNet2SSGTeacher()
    keys = list(teacher.state_dict())
    # ULIP's Pointnet2_Ssg names, used as is: sa{1,2,3}.mlp_convs/mlp_bns, fc1/bn1, fc2/bn2.
    assert keys[:2] == ["sa1.mlp_convs.0.weight", "sa1.mlp_convs.0.bias"]
    assert "sa3.mlp_bns.2.num_batches_tracked" in keys and "bn2.running_var" in keys
    expected = (3 * 64 + 64 + 64 * 64 + 64 + 64 * 128 + 128) + 2 * (64 + 64 + 128)  # sa1 convs + BNs
    expected += (131 * 128 + 128 + 128 * 128 + 128 + 128 * 256 + 256) + 2 * (128 + 128 + 256)
    expected += (259 * 256 + 256 + 256 * 512 + 512 + 512 * 1024 + 1024) + 2 * (256 + 512 + 1024)
    expected += (1024 * 512 + 512) + 2 * 512 + (512 * 256 + 256) + 2 * 256
    assert sum(p.numel() for p in teacher.parameters()) == expected
    assert not teacher.training
    teacher.train()
    assert not teacher.training  # default mode='eval' (queue extraction)
