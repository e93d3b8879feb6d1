"""PointNet++ multi-scale-grouping encoder, the per-point geometry branch (docs/model.md §3).

:class:`PointNet2MSG` turns a centred cloud (B, N, 3) into per-point features (B, 128, N): four
set-abstraction (SA) levels sample ever fewer centres by furthest point sampling and pool ball
neighbourhoods at two radii each; four feature-propagation (FP) modules then carry the features back
up to the input points by three-NN inverse-distance interpolation.

Every MLP layer is a "shared MLP" layer: a 1x1 ``Conv2d`` without bias, ``BatchNorm2d`` (eps 1e-5,
momentum 0.1) and ReLU, the ReLU also after the last layer. Conv weights start from
``kaiming_normal_``, BN from weight 1 and bias 0.

State-dict keys and the reference (top-level name ``pts_extractor`` in the CleanPose net):

==========================================================  ==========================================================
ours (relative to this module)                              reference (relative to ``pts_extractor``)
==========================================================  ==========================================================
``set_abstraction.{i}.scales.{s}.layers.{l}.conv.weight``   ``SA_modules.{i}.mlps.{s}.layer{l}.conv.weight``
``set_abstraction.{i}.scales.{s}.layers.{l}.norm.{p}``      ``SA_modules.{i}.mlps.{s}.layer{l}.normlayer.bn.{p}``
``feature_propagation.{i}.mlp.layers.{l}.conv.weight``      ``FP_modules.{i}.mlp.layer{l}.conv.weight``
``feature_propagation.{i}.mlp.layers.{l}.norm.{p}``         ``FP_modules.{i}.mlp.layer{l}.normlayer.bn.{p}``
==========================================================  ==========================================================

``{p}`` is ``weight``, ``bias``, ``running_mean``, ``running_var`` or ``num_batches_tracked``. The indices
keep their meaning: ``feature_propagation.{i}`` (``FP_modules.{i}``) outputs at level i (level 0 = the
input points, level i+1 = the centres of SA level i) and the deepest one runs first.
:func:`reference_key_map` gives the same table as prefix patterns (see ``models/attention.py`` for the
convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cleanpose.config import PointEncoderConfig
from cleanpose.ops import (
    ball_query,
    furthest_point_sample,
    gather_points,
    group_points,
    inverse_distance_weights,
    three_interpolate,
    three_nn,
)

__all__ = [
    "FeaturePropagation",
    "PointNet2MSG",
    "SetAbstractionMSG",
    "SharedMLP",
    "SharedMLPLayer",
    "reference_key_map",
    "rows_layout",
]

DEFAULT_NUM_CENTERS = (512, 256, 128, 64)
DEFAULT_RADII = ((0.01, 0.02), (0.02, 0.04), (0.04, 0.08), (0.08, 0.16))
DEFAULT_NUM_NEIGHBORS = ((16, 32), (16, 32), (16, 32), (16, 32))
DEFAULT_SA_CHANNELS = ((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128, 256))
DEFAULT_FP_CHANNELS = ((128, 128), (256, 256), (256, 256), (512, 512))


class SharedMLPLayer(nn.Module):
    """1x1 ``Conv2d`` (no bias) -> ``BatchNorm2d`` -> ReLU, applied at every point independently.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        return self.activation(self.norm(self.conv(features)))

    def forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The same layer on (P, C_in) rows, one per point (channels last) -> (P, C_out).

        The 1x1 convolution is a matrix product; the BatchNorm sees a (P, C, 1, 1) view, so its statistics
        run over the same P points as over the (B, C, H, W) map (see :func:`rows_layout`).
        """
        normalized = self.norm(F.linear(rows, self.conv.weight.flatten(1))[:, :, None, None])
        return self.activation(normalized.flatten(1))


class SharedMLP(nn.Module):
    """A stack of :class:`SharedMLPLayer` with the given channel widths.

    Args:
        channels: widths ``[C_in, C_1, ..., C_out]``; one layer per consecutive pair.
    """

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"SharedMLP: channels is {list(channels)}; expected at least [C_in, C_out]")
        self.layers = nn.ModuleList(SharedMLPLayer(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W); under :func:`rows_layout` computed on (B·H·W, C) rows, the
        output then a channels-last view."""
        if not rows_layout(features):
            for layer in self.layers:
                features = layer(features)
            return features
        batch, channels, height, width = features.shape
        rows = features.permute(0, 2, 3, 1).reshape(-1, channels)
        for layer in self.layers:
            rows = layer.forward_rows(rows)
        return rows.view(batch, height, width, -1).permute(0, 3, 1, 2)


def rows_layout(features: torch.Tensor) -> bool:
    """Whether the point-wise MLPs run on (points, channels) rows: under bfloat16 autocast (issue 17).

    Under bf16, PyTorch's BatchNorm of a (B, C, H, W) map runs its native kernels with one thread block
    per channel (cuDNN takes no bf16), which leaves most of a GPU idle, and the max over a map's last axis
    is slow too; on rows it uses the channels-last kernels, and the max runs with the channels contiguous
    (benchmarks/NOTES.md). In fp32, cuDNN serves the map layout, and the rows made the whole step several
    times slower on an H100, so fp32 keeps the map layout. Both compute the same function (the same
    statistics over the same points; only the order of float sums differs).
    """
    device = features.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16


class SetAbstractionMSG(nn.Module):
    """One multi-scale-grouping set-abstraction level.

    Centres are picked by :func:`~cleanpose.ops.furthest_point_sample` (votenet semantics, including the
    near-origin skip). For each scale, a ball query gathers neighbours; their offsets to the centre
    (``xyz - centre``, not divided by the radius) are concatenated before the neighbours' features
    (channel order ``[offset xyz (3), features (C)]``), passed through the scale's shared MLP and
    max-pooled over the neighbours. The scales are concatenated in the given (radius) order.

    Args:
        num_centers: centres sampled at this level.
        radii: ball radius per scale, metres.
        num_neighbors: neighbours per ball, per scale.
        in_channels: feature channels C of the input points (0 for bare coordinates).
        mlp_channels: hidden and output widths of each scale's MLP (its input is C + 3).
    """

    def __init__(
        self,
        num_centers: int,
        radii: Sequence[float],
        num_neighbors: Sequence[int],
        in_channels: int,
        mlp_channels: Sequence[int],
    ):
        super().__init__()
        if len(radii) != len(num_neighbors):
            raise ValueError(
                f"SetAbstractionMSG: radii {list(radii)} and num_neighbors {list(num_neighbors)} differ in length"
            )
        self.num_centers = int(num_centers)
        self.radii = [float(radius) for radius in radii]
        self.num_neighbors = [int(count) for count in num_neighbors]
        self.scales = nn.ModuleList(SharedMLP([in_channels + 3, *mlp_channels]) for _ in self.radii)
        self.out_channels = mlp_channels[-1] * len(self.radii)

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample centres and pool their neighbourhoods.

        Args:
            xyz: (B, n, 3) float32 point coordinates, metres, centred frame.
            features: (B, C, n) float32 features of those points, or None at the first level.

        Returns:
            ``(centers, pooled)``: (B, M, 3) centre coordinates (a subset of ``xyz``) and
            (B, out_channels, M) pooled features.
        """
        xyz_channels_first = xyz.transpose(1, 2).contiguous()
        center_idx = furthest_point_sample(xyz, self.num_centers)
        centers_channels_first = gather_points(xyz_channels_first, center_idx)  # (B, 3, M)
        centers = centers_channels_first.transpose(1, 2).contiguous()
        pooled = []
        for radius, count, mlp in zip(self.radii, self.num_neighbors, self.scales):
            neighbor_idx = ball_query(radius, count, xyz, centers)
            grouped = group_points(xyz_channels_first, neighbor_idx) - centers_channels_first.unsqueeze(-1)
            if features is not None:
                grouped = torch.cat([grouped, group_points(features, neighbor_idx)], dim=1)
            pooled.append(mlp(grouped).max(dim=3).values)
        return centers, torch.cat(pooled, dim=1)


class FeaturePropagation(nn.Module):
    """Carry features from a coarse level to a finer one (three-NN interpolation + shared MLP).

    Each fine point takes the inverse-distance-weighted mean of its three nearest coarse points'
    features (weights ``1/(d + 1e-8)``, normalised); the result is concatenated *before* the fine
    level's own features (channel order ``[interpolated, skip]``) and passed through the MLP.

    Args:
        mlp_channels: ``[C_interpolated + C_skip, ..., C_out]``.
    """

    def __init__(self, mlp_channels: Sequence[int]):
        super().__init__()
        self.mlp = SharedMLP(mlp_channels)

    def forward(
        self,
        fine_xyz: torch.Tensor,
        coarse_xyz: torch.Tensor,
        fine_features: torch.Tensor | None,
        coarse_features: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            fine_xyz: (B, n, 3) float32 coordinates of the points to propagate to, metres.
            coarse_xyz: (B, m, 3) float32 coordinates of the points carrying ``coarse_features``.
            fine_features: (B, C_skip, n) skip features of the fine points, or None.
            coarse_features: (B, C_interpolated, m) features to propagate.

        Returns:
            (B, C_out, n) features of the fine points.
        """
        dists, idx = three_nn(fine_xyz, coarse_xyz)
        weights = inverse_distance_weights(dists).to(coarse_features.dtype)  # bf16 features under autocast
        features = three_interpolate(coarse_features, idx, weights)
        if fine_features is not None:
            features = torch.cat([features, fine_features], dim=1)
        return self.mlp(features.unsqueeze(-1)).squeeze(-1).contiguous()


class PointNet2MSG(nn.Module):
    """PointNet++ MSG encoder: (B, N, 3) centred points -> (B, C_out, N) per-point features.

    The defaults build the reference network (1,307,808 parameters, 192 state keys, C_out = 128).

    Args:
        num_centers: centres sampled by each SA level, e.g. ``(512, 256, 128, 64)``.
        radii: per SA level, the ball radius of each scale, metres.
        num_neighbors: per SA level, the neighbours per ball of each scale.
        sa_channels: per SA level, the hidden and output widths of every scale's MLP (the input width,
            previous level's channels + 3, is added).
        fp_channels: per FP module i (outputting at level i, level 0 = the input points), its hidden and
            output widths; the input width (interpolated + skip channels) is added. The encoder's output
            width is ``fp_channels[0][-1]``.
    """

    def __init__(
        self,
        num_centers: Sequence[int] = DEFAULT_NUM_CENTERS,
        radii: Sequence[Sequence[float]] = DEFAULT_RADII,
        num_neighbors: Sequence[Sequence[int]] = DEFAULT_NUM_NEIGHBORS,
        sa_channels: Sequence[Sequence[int]] = DEFAULT_SA_CHANNELS,
        fp_channels: Sequence[Sequence[int]] = DEFAULT_FP_CHANNELS,
    ):
        super().__init__()
        num_levels = len(num_centers)
        lengths = {len(radii), len(num_neighbors), len(sa_channels), len(fp_channels)}
        if lengths != {num_levels} or num_levels == 0:
            raise ValueError(
                f"PointNet2MSG: num_centers, radii, num_neighbors, sa_channels and fp_channels have lengths "
                f"{num_levels}, {len(radii)}, {len(num_neighbors)}, {len(sa_channels)}, {len(fp_channels)}; "
                "expected one equal, non-zero number of levels"
            )
        self.set_abstraction = nn.ModuleList()
        level_channels = [0]  # feature channels at level 0 (bare points), 1, ..., L
        for level in range(num_levels):
            module = SetAbstractionMSG(
                num_centers[level], radii[level], num_neighbors[level], level_channels[-1], sa_channels[level]
            )
            self.set_abstraction.append(module)
            level_channels.append(module.out_channels)
        fp_in = []
        for level in range(num_levels):
            interpolated = level_channels[-1] if level == num_levels - 1 else fp_channels[level + 1][-1]
            fp_in.append(interpolated + level_channels[level])
        self.feature_propagation = nn.ModuleList(
            FeaturePropagation([fp_in[level], *fp_channels[level]]) for level in range(num_levels)
        )
        self.out_channels = fp_channels[0][-1]

    @classmethod
    def from_config(cls, config: PointEncoderConfig) -> PointNet2MSG:
        """Build from the ``point_encoder`` section of :class:`cleanpose.config.ModelConfig`."""
        return cls(
            num_centers=config.num_centers,
            radii=config.radii,
            num_neighbors=config.num_neighbors,
            sa_channels=config.sa_channels,
            fp_channels=config.fp_channels,
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Encode a batch of clouds.

        Args:
            points: (B, N, 3) float32, metres, centred on the cloud's mean (the FPS skip rule refers to the
                origin of this frame, docs/model.md Q8).

        Returns:
            (B, C_out, N) float32 per-point features (C_out = 128 by default).

        Raises:
            ValueError: ``points`` is not (B, N, 3).
        """
        if points.dim() != 3 or points.shape[2] != 3:
            raise ValueError(f"PointNet2MSG: points has shape {tuple(points.shape)}; expected (B, N, 3)")
        xyz = [points.contiguous()]
        features: list[torch.Tensor | None] = [None]
        for level in self.set_abstraction:
            centers, pooled = level(xyz[-1], features[-1])
            xyz.append(centers)
            features.append(pooled)
        for level in reversed(range(len(self.feature_propagation))):
            features[level] = self.feature_propagation[level](
                xyz[level], xyz[level + 1], features[level], features[level + 1]
            )
        return features[0]


def reference_key_map() -> list[tuple[str, str]]:
    """Key-prefix pairs (ours, reference) relative to the module; reference top-level name ``pts_extractor``."""
    return [
        (
            r"set_abstraction\.(\d+)\.scales\.(\d+)\.layers\.(\d+)\.conv\.",
            r"SA_modules\.(\d+)\.mlps\.(\d+)\.layer(\d+)\.conv\.",
        ),
        (
            r"set_abstraction\.(\d+)\.scales\.(\d+)\.layers\.(\d+)\.norm\.",
            r"SA_modules\.(\d+)\.mlps\.(\d+)\.layer(\d+)\.normlayer\.bn\.",
        ),
        (
            r"feature_propagation\.(\d+)\.mlp\.layers\.(\d+)\.conv\.",
            r"FP_modules\.(\d+)\.mlp\.layer(\d+)\.conv\.",
        ),
        (
            r"feature_propagation\.(\d+)\.mlp\.layers\.(\d+)\.norm\.",
            r"FP_modules\.(\d+)\.mlp\.layer(\d+)\.normlayer\.bn\.",
        ),
    ]
