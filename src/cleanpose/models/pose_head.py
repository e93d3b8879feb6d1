"""Pose and size regression from keypoints (AG-Pose ``PoseSizeEstimator``; docs/model.md §10).

The head sees the keypoints in the centred camera frame, their predicted NOCS coordinates (the
correspondence a Umeyama fit would use) and their features, and regresses a rotation in the 6-D
representation, a translation relative to the point-cloud centroid, and the box size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cleanpose.geometry import ortho6d_to_rotation

__all__ = ["PoseSize", "PoseSizeEstimator", "reference_key_map"]


class PoseSize(NamedTuple):
    """Output of :class:`PoseSizeEstimator`."""

    rotation: torch.Tensor
    """(B, 3, 3) float, object-to-camera rotation; columns are the object axes in the camera frame."""
    translation: torch.Tensor
    """(B, 3) float, metres, object origin relative to the point-cloud centroid, camera frame."""
    size: torch.Tensor
    """(B, 3) float, metres, full box extents (scale × normalised size)."""


def _head(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, out_dim))


def _point_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(3, 32, 1), nn.ReLU(), nn.Conv1d(32, 64, 1), nn.ReLU())


class PoseSizeEstimator(nn.Module):
    """Rotation, translation and size from keypoints, their NOCS coordinates and features.

    Args:
        model_dim: keypoint feature width D.
    """

    def __init__(self, model_dim: int = 256):
        super().__init__()
        self.keypoint_mlp = _point_mlp()
        self.nocs_mlp = _point_mlp()
        self.local_mlp = nn.Sequential(
            nn.Conv1d(64 + model_dim + 64, 512, 1), nn.ReLU(), nn.Conv1d(512, 256, 1), nn.ReLU()
        )
        self.global_mlp = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.ReLU(), nn.Conv1d(512, 512, 1), nn.ReLU(), nn.AdaptiveAvgPool1d(1)
        )
        self.rotation_head = _head(512, 6)
        self.translation_head = _head(512, 3)
        self.size_head = _head(512, 3)

    def forward(
        self, keypoints: torch.Tensor, keypoints_nocs: torch.Tensor, keypoint_features: torch.Tensor
    ) -> PoseSize:
        """Regress the pose and size.

        Args:
            keypoints: (B, K, 3) float, metres, centred camera frame.
            keypoints_nocs: (B, K, 3) float, NOCS units; detached here, so no gradient reaches the NOCS head
                through the pose (as in the reference).
            keypoint_features: (B, K, D) float.

        Returns:
            :class:`PoseSize`; the rotation comes from :func:`cleanpose.geometry.ortho6d_to_rotation`.
        """
        features = torch.cat(
            [
                self.keypoint_mlp(keypoints.transpose(1, 2)),
                keypoint_features.transpose(1, 2),
                self.nocs_mlp(keypoints_nocs.detach().transpose(1, 2)),
            ],
            dim=1,
        )
        features = self.local_mlp(features)
        global_feature = torch.mean(features, dim=2, keepdim=True)
        pooled = self.global_mlp(torch.cat([features, global_feature.expand_as(features)], dim=1)).squeeze(2)
        r6 = self.rotation_head(pooled)
        rotation = ortho6d_to_rotation(r6.to(torch.promote_types(r6.dtype, torch.float32)))  # >= float32 under autocast
        return PoseSize(rotation, self.translation_head(pooled), self.size_head(pooled))


def reference_key_map() -> list[tuple[str, str]]:
    """Key-prefix pairs (ours, reference) relative to the module; reference top-level name ``estimator``."""
    names = [
        ("keypoint_mlp", "pts_mlp1"),
        ("nocs_mlp", "pts_mlp2"),
        ("local_mlp", "pose_mlp1"),
        ("global_mlp", "pose_mlp2"),
        ("rotation_head", "rotation_estimator"),
        ("translation_head", "translation_estimator"),
        ("size_head", "size_estimator"),
    ]
    return [(ours + r"\.", ref + r"\.") for ours, ref in names]
