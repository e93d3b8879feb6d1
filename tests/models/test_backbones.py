"""RGB backbones: keys vs the reference table, float64 re-implementations, DINOv2 pos-embed rule, weights."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models import resnet18

from cleanpose.errors import BackendUnavailableError, CheckpointError
from cleanpose.models.backbones import (
    DinoV2ViTS14,
    PSPResNet18,
    bilinear_sample_at_pixels,
    build_rgb_backbone,
    dinov2_position_embedding,
    reference_dropped_keys,
)
from tests.models.test_point_encoder import apply_key_map

TSV = "/work/shared/specs/cleanpose_state_dict_keys.tsv"


def reference_rows(variant: str) -> dict[str, tuple[int, ...]]:
    rows = {}
    with open(TSV) as table:
        for line in table.read().splitlines()[1:]:
            key, shape, _, _, top, row_variant, *_ = line.split("\t")
            if top in ("rgb_extractor", "feature_mlp") and row_variant == variant:
                rows[key] = () if shape == "scalar" else tuple(int(size) for size in shape.split("x"))
    return rows


def small_dino(**kwargs) -> DinoV2ViTS14:
    settings = dict(random_init=True, embed_dim=48, depth=2, num_heads=2, pretrain_img_size=98, out_channels=8)
    settings.update(kwargs)
    return DinoV2ViTS14(**settings)


def randomize(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every parameter and BN statistic a random value (LayerScale gammas included)."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            scale = 0.05 if parameter.dim() > 1 else 0.5
            offset = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else 0.0
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale + offset)
        for sub in module.modules():
            if isinstance(sub, torch.nn.BatchNorm2d):
                sub.running_mean.copy_(torch.randn(sub.num_features, generator=generator) * 0.1)
                sub.running_var.copy_(torch.rand(sub.num_features, generator=generator) + 0.5)


# --------------------------------------------------------------------------------------------- DINO


def bicubic_oracle(grid: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Separable bicubic (A = -0.75, border clamp) of (C, M, M) float64 with a given scale factor,
    sampling output pixel i at source (i + 0.5) / scale - 0.5, as PyTorch does for ``scale_factor``."""

    def cubic_weights(t: float) -> list[float]:
        a = -0.75

        def near(x):  # |x| <= 1
            return ((a + 2) * x - (a + 3)) * x * x + 1

        def far(x):  # 1 < |x| < 2
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

        return [far(t + 1), near(t), near(1 - t), far(2 - t)]

    def resample_axis(values: torch.Tensor, factor: float, axis: int) -> torch.Tensor:
        size = values.shape[axis]
        out_size = math.floor(size * factor)
        slices = []
        for i in range(out_size):
            src = (i + 0.5) / factor - 0.5
            base = math.floor(src)
            weights = cubic_weights(src - base)
            total = 0
            for offset, weight in zip(range(-1, 3), weights):
                total = total + weight * values.select(axis, min(max(base + offset, 0), size - 1))
            slices.append(total)
        return torch.stack(slices, dim=axis)

    return resample_axis(resample_axis(grid, scale[0], 1), scale[1], 2)


def test_position_embedding_uses_dinov2_scale_factor_rule():
    generator = torch.Generator().manual_seed(0)
    pos_embed = torch.randn(1, 1 + 37 * 37, 6, generator=generator)
    got = dinov2_position_embedding(pos_embed, (16, 16))
    patch = pos_embed[0, 1:].double().reshape(37, 37, 6).permute(2, 0, 1)
    expected = bicubic_oracle(patch, (16.1 / 37, 16.1 / 37)).permute(1, 2, 0).reshape(256, 6)
    torch.testing.assert_close(got[0, 0], pos_embed[0, 0], rtol=0, atol=0)
    # float32 kernel arithmetic (the scale is rounded to float32) vs float64: ~1e-5 absolute
    torch.testing.assert_close(got[0, 1:].double(), expected, rtol=0, atol=3e-5)
    # The direct scale-factor call agrees; resampling to size=(16, 16) (timm's rule) does not.
    direct = (
        F.interpolate(
            pos_embed[:, 1:].reshape(1, 37, 37, 6).permute(0, 3, 1, 2),
            scale_factor=((16 + 0.1) / 37, (16 + 0.1) / 37),
            mode="bicubic",
            antialias=False,
        )
        .permute(0, 2, 3, 1)
        .reshape(1, 256, 6)
    )
    torch.testing.assert_close(got[:, 1:], direct, rtol=0, atol=0)
    by_size = (
        F.interpolate(
            pos_embed[:, 1:].reshape(1, 37, 37, 6).permute(0, 3, 1, 2), size=(16, 16), mode="bicubic", antialias=False
        )
        .permute(0, 2, 3, 1)
        .reshape(1, 256, 6)
    )
    assert (got[:, 1:] - by_size).abs().max() > 1e-2
    # At the pretraining grid the embedding is used unchanged.
    assert dinov2_position_embedding(pos_embed, (37, 37)) is pos_embed


def vit_oracle(model: DinoV2ViTS14, images: torch.Tensor, choose: torch.Tensor) -> torch.Tensor:
    """Float64 DINOv2 forward (docs/model.md §4a) written from the spec with explicit tensor algebra."""
    state = {key: value.double() for key, value in model.state_dict().items()}
    patch, dim = model.patch_size, state["vit.cls_token"].shape[-1]
    heads = model.vit.blocks[0].attn.num_heads
    batch, _, height, width = images.shape
    grid_h, grid_w = height // patch, width // patch
    # patch embedding as an explicit sum over each 14x14 patch
    patches = images.double().reshape(batch, 3, grid_h, patch, grid_w, patch).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, grid_h * grid_w, 3 * patch * patch)
    tokens = patches @ state["vit.patch_embed.proj.weight"].reshape(dim, -1).T + state["vit.patch_embed.proj.bias"]
    tokens = torch.cat([state["vit.cls_token"].expand(batch, 1, dim), tokens], dim=1)
    side = math.isqrt(state["vit.pos_embed"].shape[1] - 1)
    grid = state["vit.pos_embed"][0, 1:].reshape(side, side, dim).permute(2, 0, 1)
    scale = ((grid_h + 0.1) / side, (grid_w + 0.1) / side)
    pos = bicubic_oracle(grid, scale).permute(1, 2, 0).reshape(grid_h * grid_w, dim)
    tokens = tokens + torch.cat([state["vit.pos_embed"][0, :1], pos])

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-6) * state[prefix + ".weight"] + state[prefix + ".bias"]

    head_dim = dim // heads
    for index in range(len(model.vit.blocks)):
        p = f"vit.blocks.{index}."
        qkv = layer_norm(tokens, p + "norm1") @ state[p + "attn.qkv.weight"].T + state[p + "attn.qkv.bias"]
        q, k, v = qkv.reshape(batch, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) * head_dim**-0.5, dim=-1) @ v
        attention = attention.transpose(1, 2).reshape(batch, -1, dim)
        attention = attention @ state[p + "attn.proj.weight"].T + state[p + "attn.proj.bias"]
        tokens = tokens + attention * state[p + "ls1.gamma"]
        hidden = layer_norm(tokens, p + "norm2") @ state[p + "mlp.fc1.weight"].T + state[p + "mlp.fc1.bias"]
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
        hidden = hidden @ state[p + "mlp.fc2.weight"].T + state[p + "mlp.fc2.bias"]
        tokens = tokens + hidden * state[p + "ls2.gamma"]
    token_map = tokens[:, 1:].reshape(batch, grid_h, grid_w, dim).permute(0, 3, 1, 2)
    dense = F.interpolate(token_map, size=(height, width), mode="bilinear", align_corners=False).flatten(2)
    gathered = torch.gather(dense, 2, choose.unsqueeze(1).expand(-1, dim, -1))
    weight = state["feature_projection.weight"][:, :, 0]
    return weight @ gathered + state["feature_projection.bias"][:, None]


def test_dino_forward_matches_float64_reimplementation():
    generator = torch.Generator().manual_seed(1)
    model = small_dino()
    randomize(model, generator)
    images = torch.randn(2, 3, 56, 70, generator=generator)  # 4 x 5 patch grid, non-square
    choose = torch.randint(0, 56 * 70, (2, 50), generator=generator)
    got = model(images, choose)
    assert got.shape == (2, 8, 50)
    torch.testing.assert_close(got.double(), vit_oracle(model, images, choose), rtol=1e-5, atol=1e-5)


def test_bilinear_sampling_equals_full_upsample_then_gather():
    generator = torch.Generator().manual_seed(2)
    token_map = torch.randn(2, 5, 16, 16, generator=generator, dtype=torch.float64)
    choose = torch.cat(
        [torch.tensor([[0, 223, 224 * 224 - 1]] * 2), torch.randint(0, 224 * 224, (2, 200), generator=generator)], 1
    )
    full = F.interpolate(token_map, size=(224, 224), mode="bilinear", align_corners=False).flatten(2)
    expected = torch.gather(full, 2, choose.unsqueeze(1).expand(-1, 5, -1))
    torch.testing.assert_close(
        bilinear_sample_at_pixels(token_map, choose, (224, 224)), expected, rtol=1e-12, atol=1e-12
    )


def test_frozen_vit_gets_no_gradient_and_projection_does():
    generator = torch.Generator().manual_seed(3)
    model = small_dino().train()
    images = torch.randn(1, 3, 28, 28, generator=generator)
    model(images, torch.randint(0, 28 * 28, (1, 10), generator=generator)).sum().backward()
    for name, parameter in model.named_parameters():
        if name.startswith("feature_projection"):
            assert parameter.requires_grad and parameter.grad is not None and parameter.grad.abs().sum() > 0
        else:
            assert not parameter.requires_grad and parameter.grad is None, name


def test_dino_reference_sizes_and_keys_match_tsv():
    model = DinoV2ViTS14(random_init=True)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (frozen, trainable) == (22_056_576, 49_280)
    pairs = model.reference_key_map()
    renamed = {apply_key_map(key, pairs): tuple(value.shape) for key, value in model.state_dict().items()}
    assert renamed == reference_rows("dino")
    inverse = [(reference, ours) for ours, reference in pairs]
    assert {apply_key_map(key, inverse) for key in renamed} == set(model.state_dict())


@pytest.mark.parametrize("layout", ["official", "timm"])
def test_dino_loads_official_and_timm_weight_files(tmp_path, layout):
    source = small_dino()
    randomize(source, torch.Generator().manual_seed(4))
    state = {key.removeprefix("vit."): value for key, value in source.state_dict().items() if key.startswith("vit.")}
    if layout == "official":
        state["mask_token"] = source.mask_token.detach().clone()
        path = tmp_path / "dinov2_small.pth"
        torch.save(state, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    loaded = small_dino(random_init=False, weights_path=path)
    for key, value in loaded.state_dict().items():
        if key.startswith("vit."):
            torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    expected_mask = source.mask_token if layout == "official" else torch.zeros_like(source.mask_token)
    torch.testing.assert_close(loaded.mask_token, expected_mask, rtol=0, atol=0)


def test_dino_weight_errors(tmp_path):
    with pytest.raises(BackendUnavailableError, match="no DINOv2 weights given; pass weights_path"):
        DinoV2ViTS14()
    missing = tmp_path / "dinov2_vits14_pretrain.pth"
    with pytest.raises(CheckpointError, match=f"{missing}: DINOv2 weights file not found"):
        small_dino(random_init=False, weights_path=missing)
    with pytest.raises(ValueError, match="exclude each other"):
        small_dino(weights_path=missing)
    bad = tmp_path / "bad.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 48)}, bad)
    mismatch = r"bad.pth: DINOv2 state dict does not match the DINOv2 backbone; missing keys: blocks"
    with pytest.raises(CheckpointError, match=mismatch):
        small_dino(random_init=False, weights_path=bad)
    wrong_shape = {
        key.removeprefix("vit."): value for key, value in small_dino().state_dict().items() if key.startswith("vit.")
    }
    wrong_shape["pos_embed"] = torch.zeros(1, 17, 48)
    torch.save(wrong_shape, bad)
    mismatch = r"shape mismatch \(file vs backbone\): pos_embed \(1, 17, 48\) vs \(1, 50, 48\)"
    with pytest.raises(CheckpointError, match=mismatch):
        small_dino(random_init=False, weights_path=bad)
    not_state = tmp_path / "list.pth"
    torch.save([1, 2], not_state)
    with pytest.raises(CheckpointError, match="expected a state dict of tensors; got list"):
        small_dino(random_init=False, weights_path=not_state)
    with pytest.raises(ValueError, match=r"images has shape \(1, 3, 30, 28\); expected H and W multiples of 14"):
        small_dino()(torch.zeros(1, 3, 30, 28), torch.zeros(1, 4, dtype=torch.int64))


# --------------------------------------------------------------------------------------------- PSP


def psp_oracle(model: PSPResNet18, images: torch.Tensor, choose: torch.Tensor) -> torch.Tensor:
    """Float64 eval-mode forward of docs/model.md §4b from the state dict, with functional ops."""
    s = {key: value.double() for key, value in model.state_dict().items()}

    def bn(x, p):
        return F.batch_norm(
            x, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"], False, 0.0, 1e-5
        )

    def block(x, p, stride, downsample):
        out = F.relu(bn(F.conv2d(x, s[p + ".conv1.weight"], stride=stride, padding=1), p + ".bn1"))
        out = bn(F.conv2d(out, s[p + ".conv2.weight"], padding=1), p + ".bn2")
        if downsample:
            x = bn(F.conv2d(x, s[p + ".downsample.0.weight"], stride=stride), p + ".downsample.1")
        return F.relu(out + x)

    x = F.relu(bn(F.conv2d(images.double(), s["resnet.conv1.weight"], stride=2, padding=3), "resnet.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for layer, stride in zip((1, 2, 3, 4), (1, 2, 1, 1)):  # output stride 8: layers 3 and 4 keep resolution
        x = block(x, f"resnet.layer{layer}.0", stride, layer > 1)
        x = block(x, f"resnet.layer{layer}.1", 1, False)
    h, w = x.shape[-2:]
    priors = []
    for index, size in enumerate((1, 2, 3, 6)):
        pooled = F.conv2d(F.adaptive_avg_pool2d(x, size), s[f"pyramid_pooling.stages.{index}.1.weight"])
        priors.append(F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False))
    x = F.relu(
        F.conv2d(
            torch.cat(priors + [x], 1), s["pyramid_pooling.bottleneck.weight"], s["pyramid_pooling.bottleneck.bias"]
        )
    )
    for index in (1, 2, 3):
        p = f"upsample{index}"
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = bn(F.conv2d(x, s[p + ".1.weight"], s[p + ".1.bias"], padding=1), p + ".2")
        x = F.prelu(x, s[p + ".3.weight"])
    x = F.prelu(bn(F.conv2d(x, s["head.0.weight"], s["head.0.bias"]), "head.1"), s["head.2.weight"])
    return torch.gather(x.flatten(2), 2, choose.unsqueeze(1).expand(-1, x.shape[1], -1))


def test_psp_forward_matches_float64_reimplementation():
    generator = torch.Generator().manual_seed(5)
    model = PSPResNet18()
    randomize(model, generator)
    model.eval()
    images = torch.randn(2, 3, 32, 40, generator=generator)
    choose = torch.randint(0, 32 * 40, (2, 30), generator=generator)
    got = model(images, choose)
    assert got.shape == (2, 128, 30)
    torch.testing.assert_close(got.double(), psp_oracle(model, images, choose), rtol=1e-5, atol=2e-5)


def test_psp_train_mode_dropout_follows_the_generator_only():
    # Equal generators give equal features whatever the global RNG; the draws change the output.
    model = PSPResNet18(psp_channels=16, out_channels=8).train()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    choose = torch.arange(20).repeat(2, 1)
    torch.manual_seed(0)
    first = model(images, choose, torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    assert torch.equal(model(images, choose, torch.Generator().manual_seed(3)), first)
    assert not torch.equal(model(images, choose, torch.Generator().manual_seed(4)), first)
    with pytest.raises(ValueError, match="channel_dropout: a torch.Generator is required"):
        model(images, choose)


def test_psp_reference_sizes_and_keys_match_tsv():
    model = PSPResNet18()
    assert all(p.requires_grad for p in model.parameters())
    fc_parameters = 512 * 1000 + 1000  # the reference's unused classifier, dropped here
    assert sum(p.numel() for p in model.parameters()) + fc_parameters == 17_913_900
    renamed = {
        apply_key_map(key, PSPResNet18.reference_key_map()): tuple(v.shape) for key, v in model.state_dict().items()
    }
    expected = reference_rows("resnet")
    dropped = {
        key for key in expected if any(key.startswith(p.replace("\\.", ".")) for p in reference_dropped_keys("resnet"))
    }
    assert dropped == {"rgb_extractor.model.feats.fc.weight", "rgb_extractor.model.feats.fc.bias"}
    assert renamed == {key: shape for key, shape in expected.items() if key not in dropped}
    assert reference_dropped_keys("dino") == []


def test_psp_loads_torchvision_imagenet_file(tmp_path):
    source = resnet18()
    randomize(source, torch.Generator().manual_seed(6))
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = PSPResNet18(imagenet_weights_path=path)
    for key, value in model.resnet.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    mismatch = r"resnet18.pth: ResNet18 state dict does not match the ResNet18 backbone; missing keys: bn1"
    with pytest.raises(CheckpointError, match=mismatch):
        PSPResNet18(imagenet_weights_path=path)
    with pytest.raises(CheckpointError, match="nothere.pth: ResNet18 weights file not found"):
        PSPResNet18(imagenet_weights_path=tmp_path / "nothere.pth")


def test_build_rgb_backbone_and_input_errors():
    assert isinstance(
        build_rgb_backbone("dino", random_init=True, embed_dim=24, depth=1, num_heads=2, pretrain_img_size=42),
        DinoV2ViTS14,
    )
    with pytest.raises(ValueError, match="unknown RGB backbone 'vgg'; valid names: dino, resnet"):
        build_rgb_backbone("vgg")
    with pytest.raises(ValueError, match="unknown RGB backbone 'vgg'"):
        reference_dropped_keys("vgg")
    model = small_dino()
    with pytest.raises(ValueError, match=r"images has shape \(3, 28, 28\); expected \(B, 3, H, W\)"):
        model(torch.zeros(3, 28, 28), torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"choose has shape \(2, 4\) for images \(1, 3, 28, 28\); expected \(B, N\)"):
        model(torch.zeros(1, 3, 28, 28), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="choose has dtype torch.float32; expected int64"):
        model(torch.zeros(1, 3, 28, 28), torch.zeros(1, 4))
