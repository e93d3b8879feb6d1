"""The assembled CleanPose network and ``build_model`` (docs/model.md §0, §16); checkpoints: ``models/checkpoint.py``.

Data flow of one forward (docs/model.md §0), B objects of N points:

1. Queue draw (no gradient, before anything else): S entries per category from the confounder queue,
   ``queue_feats = drawn[category]`` (B, S, 256). An explicit ``queue_idx`` (C, S), or (B, C, S) with one
   draw per object, replaces the draw.
2. ``c = mean(pts)``; the points are centred.
3. RGB features gathered at ``choose`` (B, 128, N).
4. Training only: in-model augmentation ``pts = ((pts − dt) / ds) @ dR`` drawn from a ``torch.Generator``.
5. PointNet++ features (B, 128, N) → keypoint detector (queries, heat map) → keypoints ``heat_map @ pts`` and
   keypoint features ``heat_map @ F`` with ``F = cat(point, rgb)`` → GAFA → front-door encoder →
   reconstructor, NOCS head, pose head.
6. Training only: FIFO push of the mean front-door feature of every object into its category's queue, and
   the distillation features (student head; teacher when one is attached).

The forward is split as in timm's ``vision_transformer.py``: :meth:`CleanPoseNet.forward_features` runs
steps 3–5 up to the front-door output (:class:`NetworkFeatures`, in the frame the network sees: centred,
and in training augmented), :meth:`CleanPoseNet.forward_head` runs the reconstructor, NOCS and pose heads
on those features, and :meth:`CleanPoseNet.forward` adds the queue draw, the centring, the mapping back to
the camera frame (``+ c`` in eval; through the augmentation, then ``+ c``, in training) and the training
extras.

Outputs: every key has one shape, unit and frame in both modes (:meth:`CleanPoseNet.forward` lists them);
a few exist only in training. Before this layout, ``recon_model`` was (B, 3, P·K) in the centred frame in
eval and (B, P·K, 3) in the camera frame in training; it is now the training (loss) tensor only, and the
eval debug tensor of docs/model.md §16b is ``local_recon_model.transpose(1, 2)``. ``kpt_nocs`` /
``pred_kpt_nocs`` and ``heat_map`` / ``pred_heat_map`` (the reference's eval and train names of one
tensor) are both present in both modes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cleanpose.config import ModelConfig, config_from_dict, config_to_dict, load_config
from cleanpose.errors import BackendUnavailableError, ConfigError
from cleanpose.geometry import euler_xyz_to_matrix
from cleanpose.models.attention import set_fused_attention
from cleanpose.models.backbones import build_rgb_backbone
from cleanpose.models.distillation import ResidualDistillationHead
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
    "Augmentation",
    "CleanPoseNet",
    "NetworkFeatures",
    "build_model",
    "resolve_model_config",
    "sample_augmentation",
]

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
        self.point_encoder = PointNet2MSG.from_config(config.point_encoder)
        self.keypoint_detector = InstanceAdaptiveKeypointDetector.from_config(config.keypoint_detector)
        self.feature_aggregator = GeometricAwareFeatureAggregator.from_config(config.feature_aggregator)
        self.front_door = FrontDoorEncoder.from_config(config.front_door)
        self.queue = ConfounderQueue.from_config(config.front_door, config.num_categories)
        self.reconstructor = Reconstructor.from_config(config.reconstructor)
        self.nocs_predictor = NocsPredictor.from_config(config.nocs_predictor)
        self.pose_head = PoseSizeEstimator(config.reconstructor.model_dim)
        self.distillation_head = ResidualDistillationHead.from_config(
            config.distillation, student_dim=config.point_encoder.out_dim
        )
        self.teacher: nn.Module | None = None
        set_fused_attention(self, config.fused_attention)
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
        if teacher is not None:
            set_fused_attention(teacher, self.config.fused_attention)
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
            queue_idx: (C, S) int64, the queue entries to draw per category (docs/model.md §16c); None draws
                with :meth:`ConfounderQueue.sample_indices` from ``queue_random_state``. A (B, C, S) tensor
                gives each object its own draw (``queue_feats[b, j] = queue[cls_b, queue_idx[b, cls_b, j]]``):
                the test path runs the objects of several images, each with its image's draw, in one forward.
            generator: training only: draws the augmentation (unless ``augmentation`` is given), the
                RGB backbone's dropout and the teacher's DropPath masks.
            augmentation: training only: explicit ``(rotation (B,3,3), translation (B,1,3), scale (B,1))``.
            queue_random_state: legacy NumPy generator of the default queue draw; None means NumPy's global
                one, as in the reference (docs/model.md Q3).
            update_queue: training only: push the pooled keypoint features into the queue (FIFO) as the
                reference does; False leaves that to the caller (the trainer pushes the features of every
                shard of every rank, gathered, so all queues stay equal).

        Returns:
            A dict; every key has the same shape, unit and frame in train and eval mode. "Camera frame"
            means the input's frame, reached in training through the augmentation
            (``x ↦ ds·(x·dRᵀ) + dt + c``) and in eval by ``+ c``; "network frame" is the centred (and in
            training augmented) frame the network sees. K keypoints, P = points per keypoint, D = 256.

            * ``pred_rotation`` (B,3,3), ``pred_translation`` (B,3) m, ``pred_size`` (B,3) m (full box
              extents), ``pred_kpt_3d`` (B,K,3) m: camera frame.
            * ``kpt_nocs`` and ``pred_kpt_nocs`` (B,K,3): the keypoints' NOCS coordinates (one tensor, the
              reference's eval and train names).
            * ``heat_map`` and ``pred_heat_map`` (B,K,N): the keypoint heat maps (one tensor, both names).
            * ``recon_delta`` (B,P·K,3) m: reconstruction offsets from the keypoints (no frame shift).
            * ``local_rotation`` (B,3,3), ``local_translation`` (B,3) m, ``local_size`` (B,3) m,
              ``local_kpt_3d`` (B,K,3) m, ``local_recon_model`` (B,P·K,3) m: pose head output, keypoints and
              reconstruction in the network frame (docs/model.md §16b's eval ``recon_model`` (B,3,P·K) is
              ``local_recon_model.transpose(1, 2)``).
            * Debug features: ``pts_local``, ``rgb_local`` (B,128,N), ``kpt_query``, ``kpt_feature_gafa``,
              ``kpt_feature`` (B,K,D); ``queue_feats`` (B,S,D) with ``use_front_door``.
            * Training only: ``recon_model`` (B,P·K,3) m, the reconstruction in the camera frame (the
              reconstruction loss's input); ``pooled_kpt_feature`` (B,D), the detached mean over keypoints
              of the front-door output that goes into the queue (with ``use_front_door``);
              ``distillation_pointnet`` and ``distillation_ulip`` (B,F) when a teacher is attached and
              ``use_distillation``.

        Raises:
            ValueError: missing batch keys or inconsistent shapes, or training without generator/augmentation.
            CheckpointError: the queue was never filled.
        """
        rgb, points, choose, categories = _unpack(batch)
        queue_feats = None
        if self.config.use_front_door:
            with torch.no_grad():
                drawn = self.queue.draw(
                    self.config.front_door.num_queue_samples, queue_idx=queue_idx, random_state=queue_random_state
                )
                queue_feats = _select_queue_features(drawn, categories.to(drawn.device))
        centroid = points.mean(dim=1, keepdim=True)
        features = self.forward_features(
            rgb, points - centroid, choose, queue_feats, augmentation=augmentation, generator=generator
        )
        outputs = features.outputs()
        outputs.update(self.forward_head(features, categories))
        with _float32_geometry(centroid):
            outputs.update(_to_camera_frame(outputs, centroid, features.augmentation))
        if self.training:
            outputs.update(self._training_outputs(features, categories, update_queue, generator))
        return outputs

    def forward_features(
        self,
        rgb: torch.Tensor,
        points: torch.Tensor,
        choose: torch.Tensor,
        queue_feats: torch.Tensor | None,
        *,
        augmentation: Augmentation | tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> NetworkFeatures:
        """Everything up to the keypoint features: RGB and point branches, keypoints, GAFA, front door.

        Args:
            rgb: (B, 3, H, W) float32 crop; choose: (B, N) int64 pixel indices (see :meth:`forward`).
            points: (B, N, 3) float32 metres, centred on each cloud's mean.
            queue_feats: (B, S, D) drawn queue features, or None without the front door.
            augmentation, generator: as in :meth:`forward`; used in training only. The RGB backbone draws
                from ``generator`` before the augmentation does.

        Returns:
            :class:`NetworkFeatures` in the network frame.

        Raises:
            ValueError: training without generator or augmentation, or an augmentation of the wrong shape.
        """
        rgb_local = self.rgb_encoder(rgb, choose, generator)
        if self.training:
            augmentation = _training_augmentation(augmentation, generator, points)
            rotation, translation, scale = augmentation
            with _float32_geometry(points):
                points = ((points - translation) / scale.unsqueeze(2)) @ rotation
        else:
            augmentation = None
        pts_local = self.point_encoder(points)
        fused = torch.cat([pts_local, rgb_local], dim=1)
        detection = self.keypoint_detector(fused)
        with _float32_geometry(points):
            keypoints = torch.bmm(detection.heat_map.to(points.dtype), points)
        fused_rows = fused.transpose(1, 2)
        keypoint_features = torch.bmm(detection.heat_map, fused_rows)
        aggregated = self.feature_aggregator(keypoint_features, keypoints.detach(), fused_rows, points)
        causal = aggregated if queue_feats is None else self.front_door(aggregated, queue_feats)
        return NetworkFeatures(
            points=points,
            augmentation=augmentation,
            pts_local=pts_local,
            rgb_local=rgb_local,
            kpt_query=detection.queries,
            heat_map=detection.heat_map,
            keypoints=keypoints,
            kpt_feature_gafa=aggregated,
            kpt_feature=causal,
            queue_feats=queue_feats,
        )

    def forward_head(self, features: NetworkFeatures, categories: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reconstructor, NOCS and pose heads on the keypoint features, in the network frame.

        Args:
            features: the output of :meth:`forward_features`.
            categories: (B,) int64 0-based categories (the NOCS head's per-category rows).

        Returns:
            ``kpt_nocs`` / ``pred_kpt_nocs`` (B,K,3), ``recon_delta`` and ``local_recon_model`` (B,P·K,3) m,
            ``local_rotation`` (B,3,3), ``local_translation`` (B,3) m, ``local_size`` (B,3) m.
        """
        keypoints, keypoint_features = features.keypoints, features.kpt_feature
        reconstruction = self.reconstructor(keypoints, keypoint_features)
        keypoints_nocs = self.nocs_predictor(keypoint_features, categories)
        pose = self.pose_head(keypoints, keypoints_nocs.detach(), keypoint_features)
        return {
            "kpt_nocs": keypoints_nocs,
            "pred_kpt_nocs": keypoints_nocs,
            "recon_delta": reconstruction.deltas,
            "local_recon_model": reconstruction.points,
            "local_rotation": pose.rotation,
            "local_translation": pose.translation,
            "local_size": pose.size,
        }

    def _training_outputs(
        self,
        features: NetworkFeatures,
        categories: torch.Tensor,
        update_queue: bool,
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        """The pooled feature for the queue (pushed when ``update_queue``) and the distillation features."""
        outputs: dict[str, torch.Tensor] = {}
        if self.config.use_front_door:
            with torch.no_grad():
                pooled = F.adaptive_avg_pool1d(features.kpt_feature.detach().transpose(1, 2), 1).squeeze(2)
                outputs["pooled_kpt_feature"] = pooled
                if update_queue:
                    self.queue.push(categories, pooled)
        if self.config.use_distillation and self.teacher is not None:
            outputs["distillation_pointnet"] = self.distillation_head(features.pts_local)
            outputs["distillation_ulip"] = self.teacher(features.points, generator)
        return outputs


@dataclass
class NetworkFeatures:
    """What :meth:`CleanPoseNet.forward_features` computes, in the network frame (centred; in training also
    augmented). K keypoints, N points, D = 256."""

    points: torch.Tensor
    """(B, N, 3) float32 m, the points the network sees (the teacher's input too)."""
    augmentation: Augmentation | None
    """The augmentation applied (training), or None (eval)."""
    pts_local: torch.Tensor
    """(B, 128, N) point-branch features."""
    rgb_local: torch.Tensor
    """(B, 128, N) RGB-branch features."""
    kpt_query: torch.Tensor
    """(B, K, D) keypoint queries after the detector's attention layer."""
    heat_map: torch.Tensor
    """(B, K, N) keypoint heat maps (rows sum to 1)."""
    keypoints: torch.Tensor
    """(B, K, 3) m, ``heat_map @ points``."""
    kpt_feature_gafa: torch.Tensor
    """(B, K, D) the geometric-aware aggregator's output."""
    kpt_feature: torch.Tensor
    """(B, K, D) the front-door output (``kpt_feature_gafa`` itself without the front door)."""
    queue_feats: torch.Tensor | None
    """(B, S, D) the drawn queue features, or None without the front door."""

    def outputs(self) -> dict[str, torch.Tensor]:
        """The output keys these features give (see :meth:`CleanPoseNet.forward`)."""
        outputs = {
            "pts_local": self.pts_local,
            "rgb_local": self.rgb_local,
            "kpt_query": self.kpt_query,
            "heat_map": self.heat_map,
            "pred_heat_map": self.heat_map,
            "local_kpt_3d": self.keypoints,
            "kpt_feature_gafa": self.kpt_feature_gafa,
            "kpt_feature": self.kpt_feature,
        }
        if self.queue_feats is not None:
            outputs["queue_feats"] = self.queue_feats
        return outputs


def _select_queue_features(drawn: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, S, D) queue features of each object's category from a (C, S, D) draw or a (B, C, S, D) per-object one.

    Raises:
        ValueError: a per-object draw whose count differs from the batch size.
    """
    if drawn.dim() == 3:
        return drawn[labels]
    if drawn.shape[0] != labels.shape[0]:
        raise ValueError(f"queue_idx holds {drawn.shape[0]} per-object draws; the batch has {labels.shape[0]}")
    return drawn[torch.arange(labels.shape[0], device=drawn.device), labels]


def _float32_geometry(points: torch.Tensor):
    """Coordinates stay in their own dtype (float32) under autocast: bfloat16 keeps 3 significant digits."""
    return torch.autocast(points.device.type, enabled=False)


def _to_camera_frame(
    local: Mapping[str, torch.Tensor], centroid: torch.Tensor, augmentation: Augmentation | None
) -> dict[str, torch.Tensor]:
    """``pred_*`` (and in training ``recon_model``) from the network-frame ``local_*`` outputs.

    Eval: ``+ c``. Training: ``x ↦ ds·(x·dRᵀ) + dt + c`` for points, ``dR·R`` for the rotation,
    ``dt + ds·(dR·t) + c`` for the translation and ``ds·s`` for the size (docs/model.md §0).

    Args:
        local: ``local_rotation`` (B,3,3), ``local_translation`` (B,3), ``local_size`` (B,3),
            ``local_kpt_3d`` (B,K,3), ``local_recon_model`` (B,P·K,3).
        centroid: (B, 1, 3) the input clouds' means, metres.
        augmentation: the training augmentation, or None (eval).
    """
    rotation, translation, size = (local[f"local_{key}"].float() for key in ("rotation", "translation", "size"))
    keypoints = local["local_kpt_3d"]
    if augmentation is None:
        return {
            "pred_translation": translation + centroid.squeeze(1),
            "pred_rotation": rotation,
            "pred_size": size,
            "pred_kpt_3d": keypoints + centroid,
        }
    aug_rotation, aug_translation, aug_scale = augmentation
    rotation_t = aug_rotation.transpose(1, 2)
    per_object = aug_scale.unsqueeze(2)
    return {
        "pred_kpt_3d": (keypoints @ rotation_t) * per_object + aug_translation + centroid,
        "recon_model": (local["local_recon_model"].float() @ rotation_t) * per_object + aug_translation + centroid,
        "pred_translation": aug_translation.squeeze(1)
        + aug_scale * torch.bmm(aug_rotation, translation.unsqueeze(2)).squeeze(2)
        + centroid.squeeze(1),
        "pred_rotation": aug_rotation @ rotation,
        "pred_size": size * aug_scale,
    }


def _training_augmentation(
    augmentation: Augmentation | tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    generator: torch.Generator | None,
    points: torch.Tensor,
) -> Augmentation:
    """The given augmentation checked and moved to ``points``, or one drawn from ``generator``."""
    batch_size = points.shape[0]
    if augmentation is None:
        if generator is None:
            raise ValueError(
                "CleanPoseNet.forward: training needs a torch.Generator (generator=...) or an explicit augmentation"
            )
        augmentation = sample_augmentation(batch_size, generator, device=points.device)
    rotation, translation, scale = augmentation
    translation = translation.reshape(batch_size, 1, 3).to(points)
    scale = scale.reshape(batch_size, 1).to(points)
    rotation = rotation.to(points)
    if tuple(rotation.shape) != (batch_size, 3, 3):
        raise ValueError(f"augmentation rotation has shape {tuple(rotation.shape)}; expected ({batch_size}, 3, 3)")
    return Augmentation(rotation, translation, scale)


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
        "front_door.model_dim": config.front_door.model_dim,
        "nocs_predictor.attention.model_dim": config.nocs_predictor.attention.model_dim,
        "reconstructor.model_dim": config.reconstructor.model_dim,
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


# ---------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------


def resolve_model_config(config: ModelConfig | Mapping[str, Any], queue_length: int | None = None) -> ModelConfig:
    """A :class:`ModelConfig` from any accepted layout, with ``front_door.queue_length`` set when given.

    Args:
        config: a :class:`ModelConfig`, a mapping in our config layout, or the reference ``pose_net``
            section (recognised by its keys such as ``cat_num``, ``IAKD``).
        queue_length: Q, entries per category; None keeps the config's.

    Raises:
        ConfigError: an invalid config.
    """
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
    return CleanPoseNet(resolve_model_config(pose_net_cfg, queue_len))
