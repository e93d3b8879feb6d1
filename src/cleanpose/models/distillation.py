"""Residual knowledge distillation: the student head and the frozen 3-D teachers (docs/model.md §11).

* :class:`ResidualDistillationHead` turns the point encoder's per-point features into a 768-d student
  feature: average pool, L2 normalise, add a zero-initialised residual MLP scaled by 0.1, project.
  The loss (mean L2 distance to the teacher) lives in ``models/losses.py``.
* :class:`PointBERTTeacher` is the ULIP-2 PointBERT point encoder (``PointTransformer_8192point``):
  FPS + kNN grouping, a mini-PointNet per group, a 12-block pre-norm transformer, and the output
  ``cat[CLS token, max over group tokens]`` (768-d, before ULIP's ``pc_projection``).
* :class:`PointNet2SSGTeacher` is the ULIP(-1) PointNet++ SSG point encoder whose 256-d feature seeds
  the confounder queue (docs/data_formats.md §6).

Teachers are frozen (``requires_grad=False``) and never saved in our checkpoints; their weights come
from the official ULIP checkpoint files through :func:`load_ulip_checkpoint`. Of those files only the
``point_encoder.*`` keys are read: the text tower, the image tower (``visual.*``), ``pc_projection``,
``image_projection``, ``text_projection`` and ``logit_scale`` are ignored on purpose, because distillation
and queue extraction use only the point encoder's output.

Each teacher computes its feature once, in ``features`` (autograd on, for pretraining the teacher);
``forward`` is ``features`` under ``torch.no_grad`` (the frozen teacher of distillation and queue extraction).

Randomness: PointBERT's DropPath and PointNet2-SSG's Dropout (both active only when the teacher runs in
train mode, as in the reference) and PointNet2-SSG's random FPS start point draw from a
``torch.Generator`` passed to ``features`` / ``forward``, never from the global RNG.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cleanpose.errors import CheckpointError
from cleanpose.fileio import atomic_writer
from cleanpose.models.point_encoder import rows_layout
from cleanpose.models.state import load_file, load_state_strict
from cleanpose.models.weights import ULIP_TEACHERS, resolve_weights
from cleanpose.ops import furthest_point_sample, gather_points, knn_points
from cleanpose.ops.knn import squared_distances

logger = logging.getLogger(__name__)

__all__ = [
    "PointBERTTeacher",
    "PointNet2SSGTeacher",
    "ResidualDistillationHead",
    "build_teacher",
    "drop_path",
    "dropout",
    "load_ulip_checkpoint",
    "map_keys",
]

TeacherMode = Literal["train", "eval"]


# ---------------------------------------------------------------------------------------------------
# Student side
# ---------------------------------------------------------------------------------------------------


class ResidualDistillationHead(nn.Module):
    """Student feature for distillation: ``(p + w·projector(p)) @ projection`` with ``p`` = normalised pool.

    ``p`` is the average of the per-point features over the points, divided by its L2 norm (no epsilon,
    as in the reference). ``projector`` = Linear(D, D, no bias) (kaiming normal) → exact GELU →
    Linear(D, D, no bias) (zeros), so the residual starts at 0. ``projection`` is a (D, F) parameter drawn
    from N(0, F^-0.5).

    Args:
        student_dim: D, channels of the point features (128).
        feature_dim: F, teacher feature width (768 for PointBERT).
        residual_weight: w, scale of the residual branch (0.1).
    """

    def __init__(self, student_dim: int = 128, feature_dim: int = 768, residual_weight: float = 0.1):
        super().__init__()
        self.residual_weight = residual_weight
        self.projector = nn.Sequential(
            nn.Linear(student_dim, student_dim, bias=False),
            nn.GELU(),
            nn.Linear(student_dim, student_dim, bias=False),
        )
        self.projection = nn.Parameter(torch.empty(student_dim, feature_dim))
        self.reset_parameters()

    @classmethod
    def from_config(cls, config, student_dim: int = 128) -> ResidualDistillationHead:
        """Build from a :class:`cleanpose.config.DistillationConfig`; ``student_dim`` = point feature width."""
        return cls(student_dim=student_dim, feature_dim=config.feature_dim, residual_weight=config.residual_weight)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise as the reference does; ``generator`` makes the draw reproducible."""
        nn.init.kaiming_normal_(self.projector[0].weight, generator=generator)
        nn.init.zeros_(self.projector[2].weight)
        nn.init.normal_(self.projection, std=self.projection.shape[1] ** -0.5, generator=generator)

    def forward(self, point_features: torch.Tensor) -> torch.Tensor:
        """Args:
            point_features: (B, D, N) float32 per-point features of the point encoder.

        Returns:
            (B, F) float32 student feature (not normalised).
        """
        pooled = F.adaptive_avg_pool1d(point_features, 1).squeeze(-1)
        pooled = pooled / pooled.norm(dim=-1, keepdim=True)
        pooled = pooled + self.residual_weight * self.projector(pooled)
        return pooled @ self.projection

    @staticmethod
    def reference_key_map() -> list[tuple[str, str]]:
        """``(ours, reference)`` key-prefix pairs; the reference keeps these at the top level of ``Net``."""
        return [(r"projector\.", r"projector_pts\."), (r"projection$", r"pointnet2ulip$")]


# ---------------------------------------------------------------------------------------------------
# Key maps and checkpoint loading
# ---------------------------------------------------------------------------------------------------


def _pattern_to_template(pattern: str) -> str:
    """Turn one side of a key-map pair into a ``re.sub`` template (groups become ``\\1``, ``\\2``...)."""
    counter = iter(range(1, 100))
    template = re.sub(r"\(\\d\+\)", lambda _: f"\\{next(counter)}", pattern)
    return template.replace("\\.", ".").rstrip("$")


def map_keys(keys: Sequence[str], key_map: Sequence[tuple[str, str]], *, to_reference: bool) -> dict[str, str]:
    """Rename keys with a list of ``(ours, reference)`` prefix pairs (first matching pair wins).

    Args:
        keys: the keys to rename, on the ``ours`` side if ``to_reference`` else on the reference side.
        key_map: ``(ours, reference)`` regex prefix pairs (``\\.`` for a dot, ``(\\d+)`` for an index).
        to_reference: direction of the renaming.

    Returns:
        ``{key: renamed key}``; keys that match no pair keep their name.
    """
    source = 0 if to_reference else 1
    compiled = [(re.compile(pair[source]), _pattern_to_template(pair[1 - source])) for pair in key_map]
    renamed = {}
    for key in keys:
        for pattern, template in compiled:
            match = pattern.match(key)
            if match:
                renamed[key] = match.expand(template) + key[match.end() :]
                break
        else:
            renamed[key] = key
    return renamed


def load_ulip_checkpoint(path: str | Path, teacher: nn.Module) -> None:
    """Load an official ULIP checkpoint's point-encoder weights into a teacher (strict).

    The official files (``…ULIP-2.pt`` for PointBERT, ``…pointnet2_ssg.pt`` for PointNet2-SSG) are dicts
    with ``state_dict`` (keys prefixed ``module.`` by DistributedDataParallel), ``epoch``, ``optimizer``,
    ``scaler``, ``best_acc1`` and ``args`` (an ``argparse.Namespace``, allowed through
    ``torch.serialization.safe_globals`` so that ``weights_only=True`` loading works). A bare state dict
    is accepted too. The ``module.`` prefix is stripped; the ``point_encoder.*`` keys must match the
    teacher exactly; every other key (text and image towers, projections, ``logit_scale``) is ignored.

    Args:
        path: the checkpoint file.
        teacher: a :class:`PointBERTTeacher` or :class:`PointNet2SSGTeacher` (anything with
            ``reference_key_map()``), built with the checkpoint's sizes.

    Raises:
        CheckpointError: unreadable file, no ``point_encoder.*`` keys, missing or unexpected keys (both
            listed), or shape mismatches.
    """
    checkpoint = load_file(path, "ULIP checkpoint", allowed_globals=[argparse.Namespace])
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        state = checkpoint["state_dict"]
    elif isinstance(checkpoint, dict) and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        state = checkpoint
    else:
        raise CheckpointError(f"{path}: expected a dict with a 'state_dict' entry (official ULIP layout)")
    prefix = "point_encoder."
    encoder_state = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key.startswith(prefix):
            encoder_state[key[len(prefix) :]] = value
    if not encoder_state:
        raise CheckpointError(f"{path}: no 'point_encoder.*' keys; is this a ULIP checkpoint?")
    key_map = teacher.reference_key_map()
    renamed = map_keys(list(encoder_state), key_map, to_reference=False)
    ours = {renamed[key]: value for key, value in encoder_state.items()}
    load_state_strict(
        ours,
        teacher,
        str(path),
        what="point encoder",
        target=type(teacher).__name__,
        shapes="checkpoint vs teacher",
        display=lambda key: prefix + map_keys([key], key_map, to_reference=True)[key],
    )
    logger.info("loaded %d point-encoder tensors from %s", len(ours), path)


def save_ulip_checkpoint(path: str | Path, teacher: nn.Module, *, args: Mapping, **extra) -> Path:
    """Atomically write a teacher in the official ULIP checkpoint layout, readable by :func:`load_ulip_checkpoint`.

    The file is ``{"state_dict": {"module.point_encoder.<ULIP name>": tensor}, "args": Namespace, **extra}``:
    our names mapped to the reference ones with the teacher's ``reference_key_map``, tensors detached and
    on the CPU, ``args`` an ``argparse.Namespace`` as in the official files (allowed there for
    ``weights_only`` loading).

    Args:
        path: the file to write; its folder must exist.
        teacher: a :class:`PointBERTTeacher` or :class:`PointNet2SSGTeacher` (anything with
            ``reference_key_map()``).
        args: plain values stored as the ``args`` namespace.
        extra: further top-level entries (plain values), written after ``args`` in the given order.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    state = teacher.state_dict()
    renamed = map_keys(list(state), teacher.reference_key_map(), to_reference=True)
    checkpoint = {
        "state_dict": {
            f"module.point_encoder.{renamed[key]}": value.detach().cpu().clone() for key, value in state.items()
        },
        "args": argparse.Namespace(**args),
        **extra,
    }
    with atomic_writer(path) as handle:
        torch.save(checkpoint, handle)
    return path


# ---------------------------------------------------------------------------------------------------
# PointBERT teacher (ULIP-2)
# ---------------------------------------------------------------------------------------------------


def _drop(
    x: torch.Tensor,
    mask_shape: tuple[int, ...],
    rate: float,
    training: bool,
    generator: torch.Generator | None,
    caller: str,
) -> torch.Tensor:
    """``x`` times a Bernoulli(1 - rate) mask of ``mask_shape`` (broadcast over ``x``) divided by ``1 - rate``.

    No-op, and no draw, when not ``training`` or ``rate == 0``. The mask is drawn in ``x``'s dtype on the
    generator's device, so a CPU generator also drives a model on another device.

    Raises:
        ValueError: a draw is needed but ``generator`` is None; ``caller`` names the layer in the message.
    """
    if not training or rate == 0.0:
        return x
    if generator is None:
        raise ValueError(
            f"{caller}: a torch.Generator is required in train mode with rate > 0 "
            "(pass generator=..., or run the teacher with teacher_mode='eval')"
        )
    keep = 1.0 - rate
    mask = torch.empty(mask_shape, dtype=x.dtype, device=generator.device)
    mask.bernoulli_(keep, generator=generator)
    return x * mask.div_(keep).to(x.device)


def drop_path(x: torch.Tensor, rate: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``.

    Kept samples are divided by ``1 - rate`` (timm's ``drop_path`` with ``scale_by_keep``), one Bernoulli
    draw per sample along the first axis.

    Args:
        x: (B, ...) float, the residual branch.
        rate: drop probability in [0, 1).
        training: no-op when False.
        generator: source of the draws; required when ``training`` and ``rate > 0``.

    Returns:
        Tensor like ``x``.

    Raises:
        ValueError: a draw is needed but ``generator`` is None.
    """
    return _drop(x, (x.shape[0],) + (1,) * (x.dim() - 1), rate, training, generator, "drop_path")


def dropout(x: torch.Tensor, rate: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Element-wise dropout drawing from ``generator`` (``torch.nn.Dropout`` draws from the global RNG).

    Each element of ``x`` (float, any shape) is kept with probability ``1 - rate`` (one Bernoulli draw per
    element, in row-major order) and kept elements are divided by ``1 - rate``, as ``torch.nn.Dropout``
    does. Arguments, result and error as :func:`drop_path`.
    """
    return _drop(x, tuple(x.shape), rate, training, generator, "dropout")


def channel_dropout(x: torch.Tensor, rate: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Channel dropout (``torch.nn.Dropout2d``) drawing from ``generator``.

    Each channel of each sample of ``x`` (B, C, H, W) is kept with probability ``1 - rate`` (one Bernoulli
    draw per (sample, channel), row-major) and kept channels are divided by ``1 - rate``. Arguments, result
    and error as :func:`drop_path`.
    """
    return _drop(x, tuple(x.shape[:2]) + (1,) * (x.dim() - 2), rate, training, generator, "channel_dropout")


class _PatchEncoder(nn.Module):
    """Mini-PointNet over each group: ``cat[max broadcast, per-point]`` (max first) between two MLPs."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, out_dim, 1)
        )
        self.out_dim = out_dim

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, G, S, 3) neighbourhoods relative to their centre → (B, G, out_dim).

        Under :func:`~cleanpose.models.point_encoder.rows_layout` (bf16 autocast) computed on (B·G·S, C)
        rows, one per point: each 1x1 convolution is a matrix product, the BatchNorm normalises the rows
        (the same statistics as over the (B·G, C, S) map) and the max runs with the channels contiguous.
        """
        batch, num_groups, size, _ = groups.shape
        if rows_layout(groups):
            return self._forward_rows(groups).reshape(batch, num_groups, self.out_dim)
        features = self.first_conv(groups.reshape(batch * num_groups, size, 3).transpose(2, 1))
        pooled = features.max(dim=2, keepdim=True).values
        features = torch.cat([pooled.expand(-1, -1, size), features], dim=1)
        features = self.second_conv(features).max(dim=2).values
        return features.reshape(batch, num_groups, self.out_dim)

    def _forward_rows(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, G, S, 3) → (B·G, out_dim), channels last."""
        batch, num_groups, size, _ = groups.shape
        features = _pointwise(self.first_conv, groups.reshape(-1, 3)).view(batch * num_groups, size, -1)
        pooled = features.max(dim=1, keepdim=True).values
        features = torch.cat([pooled.expand(-1, size, -1), features], dim=2)
        features = _pointwise(self.second_conv, features.view(batch * num_groups * size, -1))
        return features.view(batch * num_groups, size, -1).max(dim=1).values


def _pointwise(layers: nn.Sequential, rows: torch.Tensor) -> torch.Tensor:
    """Apply 1x1 ``Conv1d``, ``BatchNorm1d`` and activation layers to (P, C) rows, one row per point."""
    for layer in layers:
        if isinstance(layer, nn.Conv1d):
            rows = F.linear(rows, layer.weight.flatten(1), layer.bias)
        else:
            rows = layer(rows)
    return rows


class _Attention(nn.Module):
    """Multi-head self-attention with a packed bias-free ``qkv`` and a biased ``proj``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.use_fused_attention = False  # True: PyTorch's fused scaled_dot_product_attention (set_fused_attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        if self.use_fused_attention:
            attended = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
        else:
            attended = ((query @ key.transpose(-2, -1)) * self.scale).softmax(dim=-1) @ value
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PointBERTBlock(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches (LayerNorm eps 1e-5).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        drop_path_rate: stochastic-depth probability of this block.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, dim) → (B, T, dim); ``generator`` feeds DropPath in train mode."""
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path_rate, self.training, generator)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training, generator)


class _FrozenTeacher(nn.Module):
    """Common behaviour of the teachers: frozen parameters and a fixed or following train/eval mode."""

    def __init__(self, mode: TeacherMode):
        super().__init__()
        if mode not in ("train", "eval"):
            raise ValueError(f"teacher mode is {mode!r}; valid modes: train, eval")
        self.mode = mode

    def freeze(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        """Follow the parent's mode when ``mode == 'train'`` (as the reference does); stay in eval otherwise."""
        return super().train(mode and self.mode == "train")

    def features(self, points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The teacher's output feature with autograd on; each teacher defines it."""
        raise NotImplementedError

    def forward(self, points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The frozen teacher: :meth:`features` without gradient (same arguments, same output)."""
        with torch.no_grad():
            return self.features(points, generator)


class PointBERTTeacher(_FrozenTeacher):
    """ULIP-2 PointBERT point encoder, frozen; output ``cat[x_CLS, max over groups]`` (B, 2·trans_dim).

    Grouping: ``num_groups`` centres by the votenet furthest point sampling (with its near-origin skip,
    docs/model.md §2), then the ``group_size`` nearest points of each centre by the matrix-product squared
    distance ``‖c‖² + ‖p‖² − 2c·p`` (as the reference), taken relative to their centre. Each group goes
    through the mini-PointNet (``patch_encoder``), ``reduce_dim``, and gets a positional embedding
    ``pos_embed(centre)``; a CLS token with its own ``cls_pos`` is prepended. Every block computes
    ``x = block(x + pos)``, then a final LayerNorm.

    In ``mode='train'`` the teacher follows the net into train mode like the reference (DropPath active,
    BatchNorm on batch statistics, running statistics updated): ``features`` / ``forward`` then need a
    generator.
    ``mode='eval'`` keeps it in eval mode always (deterministic).

    Args:
        trans_dim: transformer width (384).
        depth: number of blocks (12).
        num_heads: attention heads (6).
        num_groups: group centres (512).
        group_size: points per group (32).
        encoder_dims: mini-PointNet output width (256).
        drop_path_rate: DropPath of the last block; rates run linspace(0, rate, depth) (0.1).
        mode: ``train`` (reference behaviour) or ``eval``.
    """

    def __init__(
        self,
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_groups: int = 512,
        group_size: int = 32,
        encoder_dims: int = 256,
        drop_path_rate: float = 0.1,
        mode: TeacherMode = "train",
    ):
        super().__init__(mode)
        self.num_groups = num_groups
        self.group_size = group_size
        self.out_dim = 2 * trans_dim
        self.patch_encoder = _PatchEncoder(encoder_dims)
        self.reduce_dim = nn.Linear(encoder_dims, trans_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, trans_dim))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, trans_dim))
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # float32 values, as the reference
        self.blocks = nn.ModuleList(PointBERTBlock(trans_dim, num_heads, 4.0, rate) for rate in rates)
        self.norm = nn.LayerNorm(trans_dim)
        self.freeze()

    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split a cloud into neighbourhoods.

        Args:
            points: (B, N, 3) float32, metres (the student's augmented, centred input).

        Returns:
            ``(neighborhoods, centers)``: (B, G, S, 3) neighbours minus their centre, and (B, G, 3) centres.
            The order of the neighbours inside a group is unspecified (everything after is max-pooled).
        """
        center_idx = furthest_point_sample(points, self.num_groups)
        centers = gather_points(points.transpose(1, 2), center_idx).transpose(1, 2)
        neighbor_idx = knn_points(centers, points, self.group_size, distance="expanded").idx
        batch = torch.arange(points.shape[0], device=points.device)[:, None, None]
        neighborhoods = points[batch, neighbor_idx] - centers.unsqueeze(2)
        return neighborhoods, centers

    def features(self, points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode a batch of clouds, differentiably (``forward`` is this without gradient).

        Args:
            points: (B, N, 3) float32, metres; N >= num_groups.
            generator: DropPath draws; required in train mode when a drop rate is positive.

        Returns:
            (B, 2·trans_dim) float32 teacher feature (768 at reference size), before ``pc_projection``.
        """
        neighborhoods, centers = self.group(points)
        tokens = self.reduce_dim(self.patch_encoder(neighborhoods))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centers)], dim=1)
        for block in self.blocks:
            x = block(x + pos, generator)
        x = self.norm(x)
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)

    @staticmethod
    def reference_key_map() -> list[tuple[str, str]]:
        """``(ours, reference)`` key-prefix pairs, relative to ULIP's ``point_encoder``."""
        return [(r"patch_encoder\.", r"encoder\."), (r"blocks\.(\d+)\.", r"blocks\.blocks\.(\d+)\.")]


# ---------------------------------------------------------------------------------------------------
# PointNet2-SSG teacher (ULIP)
# ---------------------------------------------------------------------------------------------------


def _random_start_furthest_point_sample(
    points: torch.Tensor, num_samples: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Furthest point sampling as ULIP's PointNet++ does it (not the votenet kernel of ``cleanpose.ops``).

    The first pick is a uniformly random point (``generator``; point 0 when None), no point is skipped,
    the running distance is updated where the new squared distance ``sum((p - c)**2)`` is strictly smaller,
    and the next pick is the first maximum.

    Args:
        points: (B, N, 3) float, metres.
        num_samples: M picks.
        generator: draws the start points; None starts at point 0.

    Returns:
        (B, M) int64 indices.
    """
    batch, num_points, _ = points.shape
    rows = torch.arange(batch, device=points.device)
    if generator is None:
        farthest = torch.zeros(batch, dtype=torch.int64, device=points.device)
    else:
        farthest = torch.randint(0, num_points, (batch,), generator=generator, device=generator.device).to(
            points.device
        )
    samples = torch.zeros(batch, num_samples, dtype=torch.int64, device=points.device)
    distance = torch.full((batch, num_points), 1e10, dtype=points.dtype, device=points.device)
    for step in range(num_samples):
        samples[:, step] = farthest
        squared = torch.sum((points - points[rows, farthest].unsqueeze(1)) ** 2, -1)
        distance = torch.where(squared < distance, squared, distance)
        farthest = distance.argmax(dim=-1)
    return samples


def _ball_query_inclusive(radius: float, num_samples: int, points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """ULIP's ball query: the first ``num_samples`` points (index order) with d² <= r², padded with the first.

    ``d²`` is the matrix-product form ``‖c‖² + ‖p‖² − 2c·p``, as ULIP's ``square_distance``.

    Args:
        radius: metres.
        num_samples: S.
        points: (B, N, 3) float.
        centers: (B, M, 3) float.

    Returns:
        (B, M, S) int64.
    """
    num_points = points.shape[1]
    squared = squared_distances(centers, points, "expanded")
    radius_squared = torch.tensor(radius**2, dtype=squared.dtype)
    index = torch.arange(num_points, device=points.device).expand_as(squared)
    index = torch.where(squared > radius_squared.to(squared.device), num_points, index)
    index = index.sort(dim=-1).values[..., :num_samples]
    first = index[..., :1].expand_as(index)
    return torch.where(index == num_points, first, index)


class _SetAbstraction(nn.Module):
    """ULIP PointNet++ set abstraction: Conv2d (with bias) → BN2d → ReLU per layer, then max over the group."""

    def __init__(
        self,
        num_centers: int | None,
        radius: float | None,
        num_samples: int | None,
        in_channels: int,
        channels: Sequence[int],
    ):
        super().__init__()
        self.num_centers = num_centers
        self.radius = radius
        self.num_samples = num_samples
        self.mlp_convs = nn.ModuleList()
        self.mlp_bns = nn.ModuleList()
        for out_channels in channels:
            self.mlp_convs.append(nn.Conv2d(in_channels, out_channels, 1))
            self.mlp_bns.append(nn.BatchNorm2d(out_channels))
            in_channels = out_channels

    def forward(
        self, xyz: torch.Tensor, features: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """xyz (B, N, 3), features (B, N, D) or None → (new xyz (B, M, 3) or None, new features (B, M, D'))."""
        if self.num_centers is None:
            # "group all": one group holding every point, xyz not centred.
            grouped = xyz.unsqueeze(1) if features is None else torch.cat([xyz, features], dim=-1).unsqueeze(1)
            new_xyz = None
        else:
            center_idx = _random_start_furthest_point_sample(xyz, self.num_centers, generator)
            rows = torch.arange(xyz.shape[0], device=xyz.device)
            new_xyz = xyz[rows[:, None], center_idx]
            idx = _ball_query_inclusive(self.radius, self.num_samples, xyz, new_xyz)
            grouped = xyz[rows[:, None, None], idx] - new_xyz.unsqueeze(2)
            if features is not None:
                grouped = torch.cat([grouped, features[rows[:, None, None], idx]], dim=-1)
        grouped = grouped.permute(0, 3, 2, 1)  # (B, C, S, M)
        for conv, norm in zip(self.mlp_convs, self.mlp_bns):
            grouped = F.relu(norm(conv(grouped)))
        return new_xyz, grouped.max(dim=2).values.transpose(1, 2)


class PointNet2SSGTeacher(_FrozenTeacher):
    """ULIP PointNet++ SSG point encoder, frozen; output the 256-d ``pc_feat`` (before ``pc_projection``).

    sa1: 512 centres, radius 0.2, 32 samples, MLP 3→64→64→128; sa2: 128 centres, radius 0.4, 64 samples,
    MLP 131→128→128→256; sa3: all points, MLP 259→256→512→1024, max; then fc1 1024→512 → BN → ReLU →
    Dropout(0.4) → fc2 512→256 → BN → ReLU → Dropout(0.4). Sampling follows ULIP's pure-PyTorch code
    (random FPS start point, ball query with d² <= r² on the matrix-product distance), not the votenet
    kernel. Queue extraction runs it in eval mode (the default here). In train mode the Dropout masks
    are drawn from the generator (:func:`dropout`, after the FPS start points), not from the global RNG
    as ``torch.nn.Dropout`` in ULIP; eval mode has no dropout and no draw besides the FPS start points.

    Args:
        num_centers: centres of sa1 and sa2.
        radii: ball radii of sa1 and sa2, metres.
        num_samples: ball sizes of sa1 and sa2.
        channels: MLP widths of sa1, sa2 and sa3.
        out_dim: width of the output feature (fc2).
        mode: ``eval`` (queue extraction) or ``train`` (follows the parent; dropout on, so ``features`` /
            ``forward`` need a generator; pretraining and experiments).
    """

    def __init__(
        self,
        num_centers: tuple[int, int] = (512, 128),
        radii: tuple[float, float] = (0.2, 0.4),
        num_samples: tuple[int, int] = (32, 64),
        channels: tuple[Sequence[int], Sequence[int], Sequence[int]] = (
            (64, 64, 128),
            (128, 128, 256),
            (256, 512, 1024),
        ),
        out_dim: int = 256,
        mode: TeacherMode = "eval",
    ):
        super().__init__(mode)
        self.sa1 = _SetAbstraction(num_centers[0], radii[0], num_samples[0], 3, channels[0])
        self.sa2 = _SetAbstraction(num_centers[1], radii[1], num_samples[1], channels[0][-1] + 3, channels[1])
        self.sa3 = _SetAbstraction(None, None, None, channels[1][-1] + 3, channels[2])
        self.fc1 = nn.Linear(channels[2][-1], 2 * out_dim)
        self.bn1 = nn.BatchNorm1d(2 * out_dim)
        self.fc2 = nn.Linear(2 * out_dim, out_dim)
        self.bn2 = nn.BatchNorm1d(out_dim)
        self.dropout_rate = 0.4
        self.out_dim = out_dim
        self.freeze()

    def features(self, points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode a batch of clouds, differentiably (``forward`` is this without gradient).

        Args:
            points: (B, N, 3) float32, metres (queue extraction feeds raw camera-frame points).
            generator: draws the FPS start points (None starts every FPS at point 0) and, in train mode,
                the two Dropout masks (then required).

        Returns:
            (B, out_dim) float32 feature.
        """
        xyz, grouped = self.sa1(points, None, generator)
        xyz, grouped = self.sa2(xyz, grouped, generator)
        _, grouped = self.sa3(xyz, grouped, generator)
        x = F.relu(self.bn1(self.fc1(grouped.reshape(points.shape[0], -1))))
        x = dropout(x, self.dropout_rate, self.training, generator)
        return dropout(F.relu(self.bn2(self.fc2(x))), self.dropout_rate, self.training, generator)

    @staticmethod
    def reference_key_map() -> list[tuple[str, str]]:
        """``(ours, reference)`` key-prefix pairs relative to ULIP's ``point_encoder`` (names are identical)."""
        return []


def build_teacher(config) -> nn.Module | None:
    """The teacher a :class:`cleanpose.config.DistillationConfig` names, with its checkpoint loaded if given.

    Returns None for ``teacher='none'``. Without ``teacher_checkpoint`` the teacher keeps its random
    initial weights (tests, smoke runs); a warning says so.
    """
    if config.teacher == "none":
        return None
    if config.teacher == "pointbert":
        teacher: nn.Module = PointBERTTeacher(mode=config.teacher_mode)
    else:
        teacher = PointNet2SSGTeacher(mode=config.teacher_mode)
    if config.teacher_checkpoint is not None:
        load_ulip_checkpoint(resolve_weights(ULIP_TEACHERS[config.teacher], config.teacher_checkpoint), teacher)
    else:
        logger.warning("distillation teacher %s has no checkpoint; it keeps random weights", config.teacher)
    return teacher
