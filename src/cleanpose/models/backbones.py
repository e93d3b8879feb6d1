"""RGB backbones: per-pixel image features gathered at the object's sampled pixels (docs/model.md §4).

Both backbones map a crop ``images`` (B, 3, H, W) and the flat pixel indices ``choose`` (B, N) of the
sampled points to ``rgb_local`` (B, 128, N). The forward is split into ``forward_features`` (the dense or
token map) and ``forward_head`` (upsampling, gathering at ``choose``, projection).

* ``"dino"`` -> :class:`DinoV2ViTS14`: a frozen DINOv2 ViT-S/14 built from timm blocks, with the DINOv2
  positional-embedding resampling rule, followed by a trainable 1x1 projection 384 -> 128.
* ``"resnet"`` -> :class:`PSPResNet18`: a trainable ResNet18 at output stride 8 with a PSP decoder.

No weights are downloaded. The ViT takes its weights from a local file (official DINOv2
``dinov2_vits14_pretrain.pth`` or timm's ``vit_small_patch14_dinov2`` state dict) or, when asked for
explicitly, starts random (its weights then come from a converted CleanPose checkpoint). The ResNet can
start from a local torchvision ImageNet ``resnet18`` file or at random.

Key maps. ``reference_key_map()`` of each class gives ``(ours, reference)`` key-prefix patterns in the
convention of ``models/attention.py``; ours are relative to the backbone module, but the reference side is
relative to the **root** of the reference net, because the DINO projection lives outside
``rgb_extractor`` there (top-level ``feature_mlp.0``). Reference keys that we drop on purpose are listed
by :func:`reference_dropped_keys`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from cleanpose.errors import BackendUnavailableError, CheckpointError
from cleanpose.models.distillation import channel_dropout
from cleanpose.models.state import load_file, load_state_strict, unwrap_state_dict
from cleanpose.ops import gather_points

__all__ = [
    "RGB_BACKBONES",
    "DinoV2ViTS14",
    "PSPResNet18",
    "PyramidPooling",
    "bilinear_sample_at_pixels",
    "build_rgb_backbone",
    "dinov2_position_embedding",
    "reference_dropped_keys",
]

logger = logging.getLogger(__name__)


def _check_inputs(name: str, images: torch.Tensor, choose: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: images has shape {tuple(images.shape)}; expected (B, 3, H, W)")
    if choose.dim() != 2 or choose.shape[0] != images.shape[0]:
        raise ValueError(
            f"{name}: choose has shape {tuple(choose.shape)} for images {tuple(images.shape)}; expected (B, N)"
        )
    if choose.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: choose has dtype {choose.dtype}; expected int64")


def _load_weights(module: nn.Module, path: Path, what: str, *, drop: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Load a pretrained state dict file into ``module`` strictly (keys starting with ``drop`` removed first).

    Returns:
        The entries of ``drop`` that the file held (so the caller can use them).

    Raises:
        CheckpointError: missing or unreadable file, no state dict in it, other keys, or other shapes.
    """
    state = unwrap_state_dict(load_file(path, f"{what} weights file"), str(path))
    dropped = {key: state.pop(key) for key in list(state) if key.startswith(tuple(drop))}
    load_state_strict(
        state, module, str(path), what=f"{what} state dict", target=f"the {what} backbone", shapes="file vs backbone"
    )
    return dropped


# ---------------------------------------------------------------------------------------------------
# DINOv2 ViT-S/14
# ---------------------------------------------------------------------------------------------------


def dinov2_position_embedding(
    pos_embed: torch.Tensor, grid_size: tuple[int, int], interpolate_offset: float = 0.1
) -> torch.Tensor:
    """Resample a DINOv2 positional embedding to a patch grid with DINOv2's own rule.

    DINOv2 (``interpolate_pos_encoding``) resizes the square M x M patch part with
    ``F.interpolate(mode="bicubic", antialias=False, scale_factor=((h + 0.1) / M, (w + 0.1) / M))``.
    Giving a scale factor rather than ``size=(h, w)`` changes the sampling positions, so timm's resampling
    does not reproduce it (docs/model.md §4a). The class position is kept as is. At the pretraining grid the
    embedding is returned unchanged.

    Args:
        pos_embed: (1, 1 + M*M, D) float, class position first.
        grid_size: (h, w) patch grid of the input image.
        interpolate_offset: DINOv2's offset (0.1 for the released models).

    Returns:
        (1, 1 + h*w, D), dtype of ``pos_embed``.
    """
    num_patches = pos_embed.shape[1] - 1
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"dinov2_position_embedding: pos_embed has shape {tuple(pos_embed.shape)}; expected a square grid"
        )
    grid_h, grid_w = grid_size
    if (grid_h, grid_w) == (side, side):
        return pos_embed
    dim = pos_embed.shape[2]
    patch = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = ((grid_h + interpolate_offset) / side, (grid_w + interpolate_offset) / side)
    patch = F.interpolate(patch, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(patch.shape[-2:]) != (grid_h, grid_w):
        raise ValueError(
            f"dinov2_position_embedding: resampling {side}x{side} by {scale} gave {tuple(patch.shape[-2:])}; "
            f"expected {(grid_h, grid_w)}"
        )
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([pos_embed[:, :1].float(), patch], dim=1).to(pos_embed.dtype)


def bilinear_sample_at_pixels(
    feature_map: torch.Tensor, choose: torch.Tensor, output_size: tuple[int, int]
) -> torch.Tensor:
    """``F.interpolate(feature_map, output_size, mode="bilinear", align_corners=False)`` at some pixels only.

    Equal to upsampling the whole map and gathering the columns ``choose`` of its flattened output, but
    touches only the N requested pixels (the full map of the DINO branch is B x 384 x 50176 floats).
    Source positions follow PyTorch: ``src = max(scale * (dst + 0.5) - 0.5, 0)`` with
    ``scale = in / out``, neighbours ``floor(src)`` and ``floor(src) + 1`` clamped to the border.

    Args:
        feature_map: (B, C, h, w) float.
        choose: (B, N) int64 flat indices ``row * W + col`` into the (H, W) output grid.
        output_size: (H, W) of the virtual upsampled map.

    Returns:
        (B, C, N): ``out[b, :, i]`` = upsampled ``feature_map[b]`` at pixel ``choose[b, i]``.
    """
    _, _, in_h, in_w = feature_map.shape
    out_h, out_w = output_size
    choose = choose.long()
    rows, cols = choose // out_w, choose % out_w

    def axis(dst: torch.Tensor, in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The ratio rounded to the map's dtype, kept on the host: an exact Python scalar gives the same products
        # as a 0-dim device tensor without an upload per call (which a CUDA-graph capture forbids).
        scale = torch.tensor(in_size / out_size, dtype=feature_map.dtype).item()
        src = (scale * (dst.to(feature_map.dtype) + 0.5) - 0.5).clamp_min(0)
        low = src.long()
        high = torch.clamp(low + 1, max=in_size - 1)
        lam = (src - low.to(src.dtype)).clamp(0, 1)
        return low, high, lam

    row_low, row_high, row_lam = axis(rows, in_h, out_h)
    col_low, col_high, col_lam = axis(cols, in_w, out_w)
    flat = feature_map.flatten(2)

    def at(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return gather_points(flat, row * in_w + col)

    row_lam, col_lam = row_lam.unsqueeze(1), col_lam.unsqueeze(1)
    top = (1 - col_lam) * at(row_low, col_low) + col_lam * at(row_low, col_high)
    bottom = (1 - col_lam) * at(row_high, col_low) + col_lam * at(row_high, col_high)
    return (1 - row_lam) * top + row_lam * bottom


class DinoV2ViTS14(nn.Module):
    """Frozen DINOv2 ViT (ViT-S/14 by default) with a trainable 1x1 projection (docs/model.md §4a).

    Features are the patch tokens after the last block and **before** the final norm, on the
    (H/14, W/14) grid, bilinearly upsampled (``align_corners=False``) to (H, W), taken at ``choose`` and
    projected 384 -> 128 by a 1x1 convolution (``feature_mlp.0`` in the reference; projecting after the
    gather computes the same function). Positional embeddings are resampled with DINOv2's rule
    (:func:`dinov2_position_embedding`). Drop rates are 0, so train and eval modes agree.

    Args:
        weights_path: DINOv2 weights file: the official ``dinov2_vits14_pretrain.pth`` layout (with
            ``mask_token``) or timm's ``vit_small_patch14_dinov2`` layout (``.pth`` or ``.safetensors``;
            ``mask_token`` then stays zero). Loaded with ``weights_only=True`` and strict keys.
        random_init: start the ViT from timm's random init instead (for tests, or when the weights come
            later from a converted CleanPose checkpoint). Exactly one of ``weights_path`` and
            ``random_init`` must be given.
        embed_dim: token width D (384 for ViT-S).
        depth: number of transformer blocks.
        num_heads: attention heads.
        patch_size: patch side, pixels.
        pretrain_img_size: image side the positional embedding was trained at (518: a 37 x 37 grid).
        out_channels: output width of the projection.
        interpolate_offset: DINOv2's positional-embedding resampling offset.
        frozen: freeze the ViT; the projection always trains (the unused final norm and ``mask_token``
            are frozen either way).

    Raises:
        BackendUnavailableError: neither ``weights_path`` nor ``random_init`` given.
        CheckpointError: the weights file is missing, unreadable or has other keys or shapes.
    """

    def __init__(
        self,
        weights_path: str | Path | None = None,
        *,
        random_init: bool = False,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        patch_size: int = 14,
        pretrain_img_size: int = 518,
        out_channels: int = 128,
        interpolate_offset: float = 0.1,
        frozen: bool = True,
    ):
        super().__init__()
        if (weights_path is None) == (not random_init):
            if weights_path is None:
                raise BackendUnavailableError(
                    "DinoV2ViTS14: no DINOv2 weights given; pass weights_path (e.g. dinov2_vits14_pretrain.pth) "
                    "or random_init=True when the weights come from a converted CleanPose checkpoint"
                )
            raise ValueError(
                f"DinoV2ViTS14: weights_path={str(weights_path)!r} and random_init=True exclude each other"
            )
        self.patch_size = patch_size
        self.interpolate_offset = interpolate_offset
        self.frozen = frozen
        self.vit = VisionTransformer(
            img_size=pretrain_img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            init_values=1e-5,
            num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            act_layer=nn.GELU,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused; kept so checkpoints round-trip
        self.feature_projection = nn.Conv1d(embed_dim, out_channels, kernel_size=1)
        self.out_channels = out_channels
        if weights_path is not None:
            self.load_dinov2_weights(weights_path)
        # The final norm and mask_token never touch the output (features are taken before the norm):
        # they stay frozen even in a trainable ViT, so no optimiser or DDP bucket waits for their gradients.
        unused = [self.mask_token, *self.vit.norm.parameters()]
        for parameter in [*self.vit.parameters(), self.mask_token] if frozen else unused:
            parameter.requires_grad_(False)

    def load_dinov2_weights(self, path: str | Path) -> None:
        """Load official DINOv2 or timm ``vit_small_patch14_dinov2`` weights into the ViT.

        Raises:
            CheckpointError: missing or unreadable file, other keys, or other shapes.
        """
        path = Path(path)
        mask_token = _load_weights(self.vit, path, "DINOv2", drop=["mask_token"]).get("mask_token")
        with torch.no_grad():
            if mask_token is None:
                logger.info("%s: no mask_token (timm layout); it stays zero (it is never used)", path)
                self.mask_token.zero_()
            elif tuple(mask_token.shape) != tuple(self.mask_token.shape):
                raise CheckpointError(
                    f"{path}: shape mismatch (file vs backbone): mask_token {tuple(mask_token.shape)} vs "
                    f"{tuple(self.mask_token.shape)}"
                )
            else:
                self.mask_token.copy_(mask_token)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Patch-token map of the last block, before the final norm, class token dropped.

        Args:
            images: (B, 3, H, W) float32, ImageNet-normalised RGB; H and W multiples of the patch size.

        Returns:
            (B, D, H/14, W/14) float32.
        """
        batch, _, height, width = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"DinoV2ViTS14: images has shape {tuple(images.shape)}; expected H and W multiples of {self.patch_size}"
            )
        grid = (height // self.patch_size, width // self.patch_size)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.vit.cls_token.expand(batch, -1, -1), tokens], dim=1)
            tokens = tokens + dinov2_position_embedding(self.vit.pos_embed, grid, self.interpolate_offset)
            for block in self.vit.blocks:
                tokens = block(tokens)
        return tokens[:, 1:].reshape(batch, grid[0], grid[1], -1).permute(0, 3, 1, 2)

    def forward_head(self, token_map: torch.Tensor, choose: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Upsample the token map to ``image_size`` at the ``choose`` pixels and project.

        Args:
            token_map: (B, D, h, w) from :meth:`forward_features`.
            choose: (B, N) int64 flat pixel indices ``row * W + col`` into the (H, W) image.
            image_size: (H, W).

        Returns:
            (B, out_channels, N) float32.
        """
        return self.feature_projection(bilinear_sample_at_pixels(token_map, choose, image_size))

    def forward(
        self, images: torch.Tensor, choose: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-pixel features at the sampled pixels.

        Args:
            images: (B, 3, H, W) float32, ImageNet-normalised RGB crop (224 x 224 in CleanPose).
            choose: (B, N) int64 flat pixel indices ``row * W + col``, values in [0, H*W).
            generator: unused (the ViT draws nothing); accepted for the RGB encoders' common signature.

        Returns:
            (B, out_channels, N) float32 ``rgb_local``.
        """
        _check_inputs("DinoV2ViTS14", images, choose)
        return self.forward_head(self.forward_features(images), choose, tuple(images.shape[-2:]))

    @staticmethod
    def reference_key_map() -> list[tuple[str, str]]:
        """Key-prefix pairs (ours relative to this module, reference relative to the net's root)."""
        # The mask_token pair comes first: in the reverse direction it is more specific than rgb_extractor.
        return [
            (r"mask_token", r"rgb_extractor\.mask_token"),
            (r"vit\.", r"rgb_extractor\."),
            (r"feature_projection\.", r"feature_mlp\.0\."),
        ]


# ---------------------------------------------------------------------------------------------------
# PSP-ResNet18
# ---------------------------------------------------------------------------------------------------


class PyramidPooling(nn.Module):
    """PSP module: pooled context at several grid sizes, concatenated with the input, fused by a 1x1 conv.

    Each stage is ``AdaptiveAvgPool2d(s)`` -> ``Conv2d(C, C, 1, bias=False)``, upsampled back bilinearly
    (``align_corners=False``). The concatenation order is ``[stage sizes..., input]``; then
    ``Conv2d(C * (len(sizes) + 1), out_channels, 1)`` with bias and ReLU.

    Args:
        in_channels: C.
        out_channels: width after fusion.
        sizes: pooled grid sizes, in concatenation order.
    """

    def __init__(self, in_channels: int, out_channels: int, sizes: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d((size, size)), nn.Conv2d(in_channels, in_channels, 1, bias=False))
            for size in sizes
        )
        self.bottleneck = nn.Conv2d(in_channels * (len(sizes) + 1), out_channels, kernel_size=1)
        self.activation = nn.ReLU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, out_channels, h, w)."""
        size = features.shape[-2:]
        priors = [
            F.interpolate(stage(features), size=size, mode="bilinear", align_corners=False) for stage in self.stages
        ]
        return self.activation(self.bottleneck(torch.cat([*priors, features], dim=1)))


def _upsample_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # Indices 1, 2, 3 hold the weights, as in the reference's `PSPUpsample.conv`.
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.PReLU(),
    )


_CONTEXT_DROPOUT = 0.3
"""Channel-dropout rate after the pyramid pooling (the reference's first Dropout2d)."""
_UPSAMPLE_DROPOUT = 0.15
"""Channel-dropout rate after the first two upsampling blocks (the reference's other Dropout2d)."""


class PSPResNet18(nn.Module):
    """ResNet18 at output stride 8 with a PSP decoder back to full resolution (docs/model.md §4b).

    The trunk is torchvision's ResNet18 (BasicBlock [2, 2, 2, 2]) with layers 3 and 4 at stride 1 and
    dilation 1 (the reference passes dilation arguments that its ResNet ignores), so a 224 input gives a
    28 x 28, 512-channel map. The decoder: :class:`PyramidPooling` (512 -> 1024) -> Dropout2d(0.3) ->
    up1 (1024 -> 256) -> Dropout2d(0.15) -> up2 (256 -> 64) -> Dropout2d(0.15) -> up3 (64 -> 64) ->
    head ``Conv2d(64, 128, 1)`` -> BN -> PReLU; each up block is ``Upsample(x2, bilinear,
    align_corners=True)`` -> ``Conv2d(3x3, pad 1)`` -> BN -> PReLU (one shared slope).

    The reference also carries the classifier ``fc`` (512 -> 1000, 513,000 parameters) that it never
    uses; we leave it out (an unused trainable parameter breaks DDP without ``find_unused_parameters``),
    so this module has 17,400,900 parameters and 158 state keys, and the converter drops
    ``rgb_extractor.model.feats.fc.*`` (:func:`reference_dropped_keys`).

    Args:
        imagenet_weights_path: optional torchvision ``resnet18`` ImageNet state dict file (``fc.*`` ignored);
            without it the trunk starts from torchvision's random init.
        out_channels: output width (128).
        psp_sizes: pyramid grid sizes.
        psp_channels: width after pyramid fusion (1024).

    Raises:
        CheckpointError: the weights file is missing, unreadable or has other keys or shapes.
    """

    output_stride = 8

    def __init__(
        self,
        imagenet_weights_path: str | Path | None = None,
        *,
        out_channels: int = 128,
        psp_sizes: Sequence[int] = (1, 2, 3, 6),
        psp_channels: int = 1024,
    ):
        super().__init__()
        resnet = ResNet(BasicBlock, [2, 2, 2, 2])
        for layer in (resnet.layer3, resnet.layer4):
            layer[0].conv1.stride = (1, 1)
            layer[0].downsample[0].stride = (1, 1)
        del resnet.fc, resnet.avgpool
        self.resnet = resnet
        if imagenet_weights_path is not None:
            _load_weights(self.resnet, Path(imagenet_weights_path), "ResNet18", drop=["fc."])
        self.pyramid_pooling = PyramidPooling(512, psp_channels, psp_sizes)
        self.upsample1 = _upsample_block(psp_channels, 256)
        self.upsample2 = _upsample_block(256, 64)
        self.upsample3 = _upsample_block(64, 64)
        self.head = nn.Sequential(nn.Conv2d(64, out_channels, kernel_size=1), nn.BatchNorm2d(out_channels), nn.PReLU())
        self.out_channels = out_channels

    def forward_features(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Dense per-pixel features.

        Args:
            images: (B, 3, H, W) float32, ImageNet-normalised RGB; H and W multiples of 8.
            generator: source of the channel-dropout masks in train mode (required there); the reference's
                ``nn.Dropout2d`` draws from the global RNG, the distribution is the same.

        Returns:
            (B, out_channels, H, W) float32.
        """
        if images.shape[-2] % self.output_stride or images.shape[-1] % self.output_stride:
            raise ValueError(
                f"PSPResNet18: images has shape {tuple(images.shape)}; "
                f"expected H and W multiples of {self.output_stride}"
            )
        trunk = self.resnet
        features = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(images))))
        features = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(features))))
        features = channel_dropout(self.pyramid_pooling(features), _CONTEXT_DROPOUT, self.training, generator)
        features = channel_dropout(self.upsample1(features), _UPSAMPLE_DROPOUT, self.training, generator)
        features = channel_dropout(self.upsample2(features), _UPSAMPLE_DROPOUT, self.training, generator)
        return self.head(self.upsample3(features))

    def forward_head(self, dense: torch.Tensor, choose: torch.Tensor) -> torch.Tensor:
        """Gather the dense map (B, C, H, W) at the flat pixel indices ``choose`` (B, N) -> (B, C, N)."""
        return gather_points(dense.flatten(2), choose)

    def forward(
        self, images: torch.Tensor, choose: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-pixel features at the sampled pixels.

        Args:
            images: (B, 3, H, W) float32, ImageNet-normalised RGB crop (224 x 224 in CleanPose).
            choose: (B, N) int64 flat pixel indices ``row * W + col``, values in [0, H*W).
            generator: source of the channel-dropout masks in train mode (required there).

        Returns:
            (B, out_channels, N) float32 ``rgb_local``.
        """
        _check_inputs("PSPResNet18", images, choose)
        return self.forward_head(self.forward_features(images, generator), choose)

    @staticmethod
    def reference_key_map() -> list[tuple[str, str]]:
        """Key-prefix pairs (ours relative to this module, reference relative to the net's root)."""
        return [
            (r"resnet\.", r"rgb_extractor\.model\.feats\."),
            (r"pyramid_pooling\.", r"rgb_extractor\.model\.psp\."),
            (r"upsample(\d+)\.", r"rgb_extractor\.model\.up_(\d+)\.conv\."),
            (r"head\.", r"rgb_extractor\.model\.final\."),
        ]


RGB_BACKBONES: dict[str, type[nn.Module]] = {"dino": DinoV2ViTS14, "resnet": PSPResNet18}
"""Backbone constructors by the reference config's ``rgb_backbone`` value."""


def build_rgb_backbone(name: str, **kwargs) -> nn.Module:
    """Build the RGB backbone that ``name`` (the reference ``rgb_backbone`` value) selects.

    Args:
        name: ``"dino"`` or ``"resnet"``.
        **kwargs: constructor arguments of that backbone.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
    """
    if name not in RGB_BACKBONES:
        raise ValueError(f"unknown RGB backbone {name!r}; valid names: {', '.join(sorted(RGB_BACKBONES))}")
    return RGB_BACKBONES[name](**kwargs)


def reference_dropped_keys(name: str) -> list[str]:
    """Reference key-prefix patterns (root-relative) that the backbone ``name`` deliberately does not load."""
    if name not in RGB_BACKBONES:
        raise ValueError(f"unknown RGB backbone {name!r}; valid names: {', '.join(sorted(RGB_BACKBONES))}")
    return [r"rgb_extractor\.model\.feats\.fc\."] if name == "resnet" else []
