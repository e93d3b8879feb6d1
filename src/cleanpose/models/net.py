"""The assembled CleanPose network, its checkpoints, and ``build_model`` / ``load_checkpoint`` (model.md §0, §16).

Data flow of one forward (model.md §0), B objects of N points:

1. Queue draw (no gradient, before anything else): S entries per category from the confounder queue,
   ``queue_feats = drawn[category]`` (B, S, 256). An explicit ``queue_idx`` (C, S) replaces the draw.
2. ``c = mean(pts)``; the points are centred.
3. RGB features gathered at ``choose`` (B, 128, N).
4. Training only: in-model augmentation ``pts = ((pts − dt) / ds) @ dR`` drawn from a ``torch.Generator``.
5. PointNet++ features (B, 128, N) → keypoint detector (queries, heat map) → keypoints ``heat_map @ pts`` and
   keypoint features ``heat_map @ F`` with ``F = cat(point, rgb)`` → GAFA → front-door encoder →
   reconstructor, NOCS head, pose head.
6. Training only: FIFO push of the mean front-door feature of every object into its category's queue, and
   the distillation features (student head; teacher when one is attached).

Outputs are mapped back to the camera frame: ``+ c`` in eval; through the augmentation in training.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are dicts with ``format_version``,
``config`` (the resolved :class:`~cleanpose.config.ModelConfig` as a dict), ``model`` (the state dict
without the queue), ``queue`` ((C, Q, 256) float32, or None when the model never had one), ``optimizer``,
``scheduler``, ``step``, ``rng`` and ``run_config``. They load with ``weights_only=True`` and strict keys. The teacher is
never saved: its weights come from the official ULIP file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cleanpose.config import ModelConfig, config_from_dict, config_to_dict, load_config
from cleanpose.errors import BackendUnavailableError, CheckpointError, ConfigError
from cleanpose.fileio import atomic_writer
from cleanpose.geometry import euler_xyz_to_matrix
from cleanpose.models.backbones import build_rgb_backbone
from cleanpose.models.distillation import ResidualDistillationHead, describe_key_mismatch
from cleanpose.models.feature_aggregator import GeometricAwareFeatureAggregator
from cleanpose.models.front_door import ConfounderQueue, FrontDoorEncoder
from cleanpose.models.keypoint_detector import InstanceAdaptiveKeypointDetector
from cleanpose.models.nocs_predictor import NocsPredictor
from cleanpose.models.point_encoder import PointNet2MSG
from cleanpose.models.pose_head import PoseSizeEstimator
from cleanpose.models.reconstructor import Reconstructor
from cleanpose.models.weights import DINOV2_VITS14, resolve_weights

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "Augmentation",
    "CleanPoseNet",
    "build_model",
    "load_checkpoint",
    "sample_augmentation",
    "save_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the checkpoint dict this build writes and reads."""

# Reference pose_net keys; a mapping holding any of them is read as a reference section by build_model.
_REFERENCE_ONLY_KEYS = {
    "cat_num",
    "select_num",
    "distillation_feat_dim",
    "angle_range",
    "FDEncoder",
    "IAKD",
    "GAFA",
    "NOCS_Predictor",
    "Reconstructor",
}


class Augmentation(tuple):
    """``(rotation (B,3,3), translation (B,1,3) m, scale (B,1))`` of the in-model training augmentation."""

    __slots__ = ()

    def __new__(cls, rotation: torch.Tensor, translation: torch.Tensor, scale: torch.Tensor):
        return super().__new__(cls, (rotation, translation, scale))

    @property
    def rotation(self) -> torch.Tensor:
        return self[0]

    @property
    def translation(self) -> torch.Tensor:
        return self[1]

    @property
    def scale(self) -> torch.Tensor:
        return self[2]


def sample_augmentation(
    batch_size: int,
    generator: torch.Generator,
    *,
    max_translation: float = 0.02,
    max_angle_deg: float = 20.0,
    scale_range: tuple[float, float] = (0.8, 1.2),
    device: torch.device | str | None = None,
) -> Augmentation:
    """Draw the reference's in-model augmentation (``utils/data_utils.py: generate_augmentation``).

    Draw order dt, angles, ds, as in the reference: dt ~ U(−0.02, 0.02)³ per object, Euler angles
    ~ U(−20°, 20°)³ with dR = Rx·Ry·Rz, ds ~ U(0.8, 1.2). The numbers differ from the reference's (which
    uses torch's global CPU and CUDA generators); the distributions are the same.

    Args:
        batch_size: B.
        generator: source of every draw (its device is where the numbers are drawn).
        max_translation: half-width of the translation range, metres.
        max_angle_deg: half-width of the angle range, degrees.
        scale_range: (low, high) of the scale.
        device: where the result lives; default the generator's device.

    Returns:
        :class:`Augmentation` with rotation (B, 3, 3), translation (B, 1, 3) m, scale (B, 1), float32.
    """
    draw_device = generator.device
    translation = torch.empty(batch_size, 1, 3, device=draw_device).uniform_(
        -max_translation, max_translation, generator=generator
    )
    angles = torch.empty(batch_size, 3, device=draw_device).uniform_(-max_angle_deg, max_angle_deg, generator=generator)
    scale = torch.empty(batch_size, 1, device=draw_device).uniform_(*scale_range, generator=generator)
    rotation = euler_xyz_to_matrix(angles / 180 * math.pi)
    target = draw_device if device is None else torch.device(device)
    return Augmentation(rotation.to(target), translation.to(target), scale.to(target))


class CleanPoseNet(nn.Module):
    """CleanPose: AG-Pose keypoint network + front-door causal module + residual distillation head.

    Every submodule exists in every mode; the mode is read only in ``forward``. The distillation teacher is
    optional (:meth:`attach_teacher`) and never part of the state dict.

    Args:
        config: the network's settings.
        load_rgb_weights: load ``config.rgb_weights`` into the RGB backbone; False (used when a checkpoint
            supplies every weight) starts it random without reading the file.
        rgb_encoder: a prebuilt RGB backbone to use instead of the one ``config.rgb_backbone`` names (for
            example a small :class:`~cleanpose.models.backbones.DinoV2ViTS14` in tests); it must map
            ``(images, choose)`` to (B, C, N) and have ``out_channels``.

    Raises:
        ConfigError: section widths that do not fit together (the fused point + RGB feature width must equal
            every keypoint-feature width).
    """

    def __init__(self, config: ModelConfig, *, load_rgb_weights: bool = True, rgb_encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        if rgb_encoder is None:
            rgb_encoder = build_rgb_backbone(config.rgb_backbone, **_rgb_kwargs(config, load_rgb_weights))
        self.rgb_encoder = rgb_encoder
        _check_widths(config, self.rgb_encoder.out_channels)
        encoder = config.point_encoder
        self.point_encoder = PointNet2MSG(
            num_centers=encoder.num_centers,
            radii=encoder.radii,
            num_neighbors=encoder.num_samples,
            sa_channels=encoder.sa_channels,
            fp_channels=encoder.fp_channels,
        )
        self.keypoint_detector = InstanceAdaptiveKeypointDetector.from_config(config.keypoint_detector)
        self.feature_aggregator = GeometricAwareFeatureAggregator.from_config(config.feature_aggregator)
        self.front_door = FrontDoorEncoder.from_config(config.front_door)
        self.queue = ConfounderQueue.from_config(config.front_door, config.num_categories)
        self.reconstructor = Reconstructor.from_config(config.reconstructor)
        self.nocs_predictor = NocsPredictor.from_config(config.nocs_predictor)
        self.pose_head = PoseSizeEstimator(config.reconstructor.feature_dim)
        self.distillation_head = ResidualDistillationHead.from_config(
            config.distillation, student_dim=config.point_encoder.out_dim
        )
        self.teacher: nn.Module | None = None
        self.register_state_dict_post_hook(_drop_teacher_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher_keys)

    def attach_teacher(self, teacher: nn.Module | None) -> None:
        """Attach (or with None detach) the frozen distillation teacher.

        The teacher is a submodule, so it follows ``.to()`` and ``.train()`` like the reference's
        ``ULIP_model``, but its keys never enter ``state_dict()``.

        Raises:
            ConfigError: the teacher's output width differs from ``distillation.feature_dim``.
        """
        if (
            teacher is not None
            and getattr(teacher, "out_dim", self.config.distillation.feature_dim)
            != self.config.distillation.feature_dim
        ):
            raise ConfigError(
                f"teacher output width {teacher.out_dim} differs from distillation.feature_dim "
                f"{self.config.distillation.feature_dim}"
            )
        self.teacher = teacher

    def forward(
        self,
        batch: Mapping[str, torch.Tensor],
        queue_idx: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        augmentation: Augmentation | tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        queue_random_state: np.random.RandomState | None = None,
        update_queue: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Run the network on a batch of objects.

        Args:
            batch: ``rgb`` (B, 3, H, W) float32 ImageNet-normalised crop; ``pts`` (B, N, 3) float32 metres,
                camera frame; ``choose`` (B, N) int64 flat pixel index into the crop; ``category_label``
                (B,) or (B, 1) int64, 0-based. Not modified.
            queue_idx: (C, S) int64, the queue entries to draw per category (model.md §16c); None draws
                with :meth:`ConfounderQueue.sample_indices` from ``queue_random_state``.
            generator: training only: draws the augmentation (unless ``augmentation`` is given) and the
                teacher's DropPath masks.
            augmentation: training only: explicit ``(rotation (B,3,3), translation (B,1,3), scale (B,1))``.
            queue_random_state: legacy NumPy generator of the default queue draw; None means NumPy's global
                one, as in the reference (model.md Q3).
            update_queue: training only: push the pooled keypoint features into the queue (FIFO) as the
                reference does; False leaves that to the caller (the trainer pushes the features of every
                shard of every rank, gathered, so all queues stay equal).

        Returns:
            Eval: ``pred_rotation`` (B,3,3), ``pred_translation`` (B,3) m, ``pred_size`` (B,3) m,
            ``pred_kpt_3d`` (B,K,3) m, ``kpt_nocs`` (B,K,3), and the debug keys ``pts_local``,
            ``rgb_local`` (B,128,N), ``kpt_query`` (B,K,256), ``heat_map`` (B,K,N), ``kpt_feature_gafa``,
            ``kpt_feature`` (B,K,256), ``queue_feats`` (B,S,256), ``recon_model`` (B,3,P·K) centred frame and
            ``recon_delta`` (B,P·K,3); ``local_rotation``, ``local_translation``, ``local_size`` and
            ``local_kpt_3d``: the pose head's output and the keypoints in the frame the network sees (centred;
            in training also augmented). Training: the reference's train keys (``pred_rotation``,
            ``pred_translation``, ``pred_size``, ``pred_kpt_3d``, ``recon_model`` (B,P·K,3), ``recon_delta``,
            ``pred_heat_map``, ``pred_kpt_nocs``; ``distillation_pointnet`` and ``distillation_ulip`` (B,F)
            when a teacher is attached and ``use_distillation``), all mapped back to the camera frame, plus
            the debug keys except ``recon_model``, and ``pooled_kpt_feature`` (B,256), the detached mean over
            keypoints of the front-door output that goes into the queue (with ``use_front_door``).

        Raises:
            ValueError: missing batch keys or inconsistent shapes, or training without generator/augmentation.
            CheckpointError: the queue was never filled.
        """
        rgb, points, choose, categories = _unpack(batch)
        batch_size = points.shape[0]
        config = self.config
        outputs: dict[str, torch.Tensor] = {}

        if config.use_front_door:
            with torch.no_grad():
                drawn = self.queue.draw(
                    config.front_door.num_queue_samples, queue_idx=queue_idx, random_state=queue_random_state
                )
                queue_feats = drawn[categories.to(drawn.device)]
            outputs["queue_feats"] = queue_feats

        centroid = points.mean(dim=1, keepdim=True)
        points = points - centroid
        rgb_local = self.rgb_encoder(rgb, choose, generator)

        if self.training:
            if augmentation is None:
                if generator is None:
                    raise ValueError(
                        "CleanPoseNet.forward: training needs a torch.Generator (generator=...) "
                        "or an explicit augmentation"
                    )
                augmentation = sample_augmentation(batch_size, generator, device=points.device)
            rotation, translation, scale = _check_augmentation(augmentation, batch_size, points)
            points = ((points - translation) / scale.unsqueeze(2)) @ rotation

        pts_local = self.point_encoder(points)
        fused = torch.cat([pts_local, rgb_local], dim=1)
        detection = self.keypoint_detector(fused)
        heat_map = detection.heat_map
        keypoints = torch.bmm(heat_map, points)
        fused_rows = fused.transpose(1, 2)
        keypoint_features = torch.bmm(heat_map, fused_rows)
        keypoint_features = self.feature_aggregator(keypoint_features, keypoints.detach(), fused_rows, points)
        outputs["kpt_feature_gafa"] = keypoint_features
        if config.use_front_door:
            keypoint_features = self.front_door(keypoint_features, queue_feats)
        reconstruction = self.reconstructor(keypoints, keypoint_features)
        keypoints_nocs = self.nocs_predictor(keypoint_features, categories)
        pose = self.pose_head(keypoints, keypoints_nocs.detach(), keypoint_features)

        outputs.update(
            pts_local=pts_local,
            rgb_local=rgb_local,
            kpt_query=detection.queries,
            heat_map=heat_map,
            kpt_feature=keypoint_features,
            recon_delta=reconstruction.deltas,
            local_rotation=pose.rotation,
            local_translation=pose.translation,
            local_size=pose.size,
            local_kpt_3d=keypoints,
        )
        c = centroid
        if not self.training:
            outputs.update(
                pred_translation=pose.translation + c.squeeze(1),
                pred_rotation=pose.rotation,
                pred_size=pose.size,
                pred_kpt_3d=keypoints + c,
                kpt_nocs=keypoints_nocs,
                recon_model=reconstruction.points.transpose(1, 2),
            )
            return outputs

        if config.use_front_door:
            with torch.no_grad():
                pooled = F.adaptive_avg_pool1d(keypoint_features.detach().transpose(1, 2), 1).squeeze(2)
                outputs["pooled_kpt_feature"] = pooled
                if update_queue:
                    self.queue.push(categories, pooled)
        if config.use_distillation and self.teacher is not None:
            outputs["distillation_pointnet"] = self.distillation_head(pts_local)
            outputs["distillation_ulip"] = self.teacher(points, generator)

        rotation_t = rotation.transpose(1, 2)
        per_object = scale.unsqueeze(2)
        outputs.update(
            pred_heat_map=heat_map,
            pred_kpt_3d=(keypoints @ rotation_t) * per_object + translation + c,
            recon_model=(reconstruction.points @ rotation_t) * per_object + translation + c,
            pred_kpt_nocs=keypoints_nocs,
            pred_translation=translation.squeeze(1)
            + scale * torch.bmm(rotation, pose.translation.unsqueeze(2)).squeeze(2)
            + c.squeeze(1),
            pred_rotation=rotation @ pose.rotation,
            pred_size=pose.size * scale,
        )
        return outputs


def _rgb_kwargs(config: ModelConfig, load_weights: bool) -> dict[str, Any]:
    """Constructor arguments of the configured RGB backbone.

    Raises:
        ConfigError: ``dino`` without weights (none configured, cached or downloadable) where the config does
            not ask for a random ViT.
        CheckpointError: the configured ``dino`` weights file is missing and not cached or downloadable.
    """
    rgb = config.rgb
    weights = config.rgb_weights if load_weights else None
    if config.rgb_backbone == "resnet":
        return {"imagenet_weights_path": weights, "psp_channels": rgb.psp_channels, "out_channels": rgb.out_channels}
    kwargs: dict[str, Any] = {
        "embed_dim": rgb.embed_dim, "depth": rgb.depth, "num_heads": rgb.num_heads, "frozen": rgb.frozen,
        "out_channels": rgb.out_channels,
    }  # fmt: skip
    if weights is None and not (load_weights and not rgb.random_init):
        return {**kwargs, "random_init": True}
    try:  # the configured file, else the torch hub cache, else a download (cleanpose.models.weights)
        return {**kwargs, "weights_path": str(resolve_weights(DINOV2_VITS14, weights))}
    except BackendUnavailableError as error:
        raise ConfigError(
            f"model.rgb_backbone is 'dino' but model.rgb_weights is not set, and the {error}; or set "
            "model.rgb.random_init: true (a frozen random ViT learns nothing: also set model.rgb.frozen: false, "
            "or use rgb_backbone: resnet)"
        ) from None


def _check_widths(config: ModelConfig, rgb_channels: int) -> None:
    fused = config.point_encoder.out_dim + rgb_channels
    widths = {
        "keypoint_detector.query_dim": config.keypoint_detector.query_dim,
        "keypoint_detector.attention.model_dim": config.keypoint_detector.attention.model_dim,
        "feature_aggregator.model_dim": config.feature_aggregator.model_dim,
        "front_door.feature_dim": config.front_door.feature_dim,
        "nocs_predictor.attention.model_dim": config.nocs_predictor.attention.model_dim,
        "reconstructor.feature_dim": config.reconstructor.feature_dim,
    }
    wrong = [f"{name} {value}" for name, value in widths.items() if value != fused]
    if wrong:
        raise ConfigError(
            f"model: point_encoder output {config.point_encoder.out_dim} + RGB {rgb_channels} = {fused} channels, "
            f"but {', '.join(wrong)}; every keypoint-feature width must equal the fused width"
        )


def _drop_teacher_keys(module: CleanPoseNet, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [key for key in state_dict if key.startswith(prefix + "teacher.")]:
        del state_dict[key]


def _ignore_missing_teacher_keys(module: CleanPoseNet, incompatible_keys) -> None:
    incompatible_keys.missing_keys[:] = [
        key for key in incompatible_keys.missing_keys if not key.startswith("teacher.")
    ]


def _unpack(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    missing = [key for key in ("rgb", "pts", "choose", "category_label") if key not in batch]
    if missing:
        raise ValueError(
            f"CleanPoseNet.forward: batch lacks {', '.join(missing)}; expected rgb, pts, choose, category_label"
        )
    rgb, points, choose = batch["rgb"], batch["pts"], batch["choose"]
    categories = batch["category_label"].reshape(-1).long()
    if points.dim() != 3 or points.shape[2] != 3:
        raise ValueError(f"CleanPoseNet.forward: pts has shape {tuple(points.shape)}; expected (B, N, 3)")
    batch_size, num_points, _ = points.shape
    if tuple(choose.shape) != (batch_size, num_points):
        raise ValueError(
            f"CleanPoseNet.forward: choose has shape {tuple(choose.shape)}; expected {(batch_size, num_points)}"
        )
    if rgb.dim() != 4 or rgb.shape[0] != batch_size:
        raise ValueError(f"CleanPoseNet.forward: rgb has shape {tuple(rgb.shape)}; expected ({batch_size}, 3, H, W)")
    if categories.shape[0] != batch_size:
        raise ValueError(
            f"CleanPoseNet.forward: category_label has {categories.shape[0]} entries; expected {batch_size}"
        )
    return rgb, points, choose, categories


def _check_augmentation(
    augmentation, batch_size: int, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rotation, translation, scale = augmentation
    translation = translation.reshape(batch_size, 1, 3).to(points)
    scale = scale.reshape(batch_size, 1).to(points)
    rotation = rotation.to(points)
    if tuple(rotation.shape) != (batch_size, 3, 3):
        raise ValueError(f"augmentation rotation has shape {tuple(rotation.shape)}; expected ({batch_size}, 3, 3)")
    return rotation, translation, scale


# ---------------------------------------------------------------------------------------------------
# Building, saving and loading
# ---------------------------------------------------------------------------------------------------


def _resolve_config(config: ModelConfig | Mapping[str, Any], queue_length: int | None) -> ModelConfig:
    if isinstance(config, ModelConfig):
        resolved = config
    elif any(key in _REFERENCE_ONLY_KEYS for key in config):
        resolved = ModelConfig.from_reference_yaml(config)
    else:
        resolved = load_config(config, ModelConfig)
    if queue_length is not None and queue_length != resolved.front_door.queue_length:
        data = config_to_dict(resolved)
        data["front_door"]["queue_length"] = queue_length
        resolved = config_from_dict(data, ModelConfig)
    return resolved


def build_model(pose_net_cfg: ModelConfig | Mapping[str, Any], queue_len: int | None = None) -> CleanPoseNet:
    """Build an untrained CleanPose network with a zero-filled, unfilled (C, queue_len, 256) queue.

    Args:
        pose_net_cfg: a :class:`ModelConfig`, a mapping in our config layout, or the reference ``pose_net``
            section (recognised by its keys such as ``cat_num``, ``IAKD``).
        queue_len: Q, entries per category; None keeps the config's ``front_door.queue_length``.

    Returns:
        The network in train mode (as ``nn.Module`` construction leaves it), on the CPU, without teacher.
    """
    return CleanPoseNet(_resolve_config(pose_net_cfg, queue_len))


def _queue_keys(model: CleanPoseNet) -> set[str]:
    return {key for key in model.state_dict() if key.startswith("queue.")}


def save_checkpoint(
    model: CleanPoseNet,
    path: str | Path,
    *,
    optimizer: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    step: int | None = None,
    rng: Mapping[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> None:
    """Atomically write a checkpoint dict (see the module docstring) loadable with ``weights_only=True``.

    ``run_config`` is the whole training config (a plain dict) when a trainer writes the file.
    """
    state = {key: value.detach().cpu() for key, value in model.state_dict().items() if not key.startswith("queue.")}
    queue = model.queue.features.detach().cpu().clone() if model.queue.is_filled else None
    checkpoint = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": config_to_dict(model.config),
        "model": state,
        "queue": queue,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "step": step,
        "rng": rng,
        "run_config": run_config,
    }
    with atomic_writer(Path(path)) as handle:
        torch.save(checkpoint, handle)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint dict without building the model.

    Raises:
        CheckpointError: missing or unreadable file, another format version, missing entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for refused or corrupt files
        raise CheckpointError(
            f"{path}: cannot be read with weights_only=True ({error}); a reference state_dict must first go "
            "through 'cleanpose convert-checkpoint'"
        ) from error
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a cleanpose checkpoint (no 'format_version'); convert reference checkpoints with "
            "'cleanpose convert-checkpoint'"
        )
    if checkpoint["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {checkpoint['format_version']}; this cleanpose reads "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    missing = [key for key in ("config", "model", "queue") if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return checkpoint


def load_checkpoint(path: str | Path) -> CleanPoseNet:
    """Build the network a checkpoint describes and load its weights and queue (strict).

    Args:
        path: a cleanpose checkpoint (:func:`save_checkpoint`, or ``cleanpose convert-checkpoint``).

    Returns:
        The network on the CPU, in eval mode. Without a stored queue its forward raises
        :class:`CheckpointError` saying the queue is missing.

    Raises:
        CheckpointError: unreadable file, bad config, missing or unexpected keys (listed), shape mismatches,
            or a queue of the wrong shape.
    """
    checkpoint = read_checkpoint(path)
    queue = checkpoint["queue"]
    try:
        config = config_from_dict(checkpoint["config"], ModelConfig, source=f"{path} [config]")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    if queue is not None and queue.dim() == 3 and queue.shape[1] != config.front_door.queue_length:
        config = _resolve_config(config, queue.shape[1])
    model = CleanPoseNet(config, load_rgb_weights=False)
    load_model_state(model, checkpoint["model"], queue, source=str(path))
    return model.eval()


def load_model_state(
    model: CleanPoseNet, state: Mapping[str, torch.Tensor], queue: torch.Tensor | None, *, source: str
) -> None:
    """Load a state dict (without queue keys) and a queue into ``model``, strictly.

    Raises:
        CheckpointError: missing or unexpected keys (listed), shape mismatches, wrong queue shape.
    """
    expected = {key: value for key, value in model.state_dict().items() if not key.startswith("queue.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        mismatch = describe_key_mismatch(missing, unexpected)
        raise CheckpointError(f"{source}: state dict does not match the network; {mismatch}")
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if tuple(state[key].shape) != tuple(value.shape)
    ]
    if mismatched:
        raise CheckpointError(f"{source}: shape mismatch (checkpoint vs network): {'; '.join(mismatched[:12])}")
    full = dict(state)
    full["queue.features"] = model.queue.features
    full["queue.filled"] = model.queue.filled
    model.load_state_dict(full, strict=True)
    if queue is not None:
        try:
            model.queue.fill(queue.to(torch.float32))
        except ValueError as error:
            raise CheckpointError(f"{source}: {error}") from None
