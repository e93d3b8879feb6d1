"""Shape reconstruction from keypoints (AG-Pose; docs/model.md §9).

Each keypoint decodes a small patch of ``points_per_keypoint`` points as offsets from itself. The
reconstruction is supervised by a Chamfer loss to the observed points, which makes the keypoints cover
the object's surface.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cleanpose.config import ReconstructorConfig

__all__ = ["Reconstruction", "Reconstructor", "reference_key_map"]


class Reconstruction(NamedTuple):
    """Output of :class:`Reconstructor`; P = points_per_keypoint."""

    points: torch.Tensor
    """(B, P·K, 3) float, metres, same frame as the keypoints: ``deltas + keypoint`` (the network's output
    ``local_recon_model``; the reference's ``recon_model`` before its transpose is this tensor transposed to
    (B, 3, P·K))."""
    deltas: torch.Tensor
    """(B, P·K, 3) float, metres: offsets; rows P·j .. P·j+P−1 belong to keypoint j."""


class Reconstructor(nn.Module):
    """Decode P points per keypoint from keypoint positions and features.

    Args:
        points_per_keypoint: P (reference ``pts_per_kpt``).
        model_dim: keypoint feature width D (reference ``ndim``).
        hidden_dim: width of the decoder's hidden layers.
    """

    def __init__(self, points_per_keypoint: int = 10, model_dim: int = 256, hidden_dim: int = 512):
        super().__init__()
        self.points_per_keypoint = points_per_keypoint
        self.position_encoder = nn.Sequential(
            nn.Conv1d(3, 64, 1), nn.ReLU(), nn.Conv1d(64, 128, 1), nn.ReLU(), nn.Conv1d(128, model_dim, 1)
        )
        self.feature_mlp = nn.Sequential(
            nn.Conv1d(model_dim, model_dim, 1), nn.ReLU(), nn.Conv1d(model_dim, model_dim, 1)
        )
        self.shape_decoder = nn.Sequential(
            nn.Conv1d(2 * model_dim, hidden_dim, 1),
            nn.ReLU(),
            nn.Conv1d(hidden_dim, hidden_dim, 1),
            nn.ReLU(),
            nn.Conv1d(hidden_dim, 3 * points_per_keypoint, 1),
        )

    @classmethod
    def from_config(cls, config: ReconstructorConfig) -> Reconstructor:
        """Build from the ``reconstructor`` section of :class:`cleanpose.config.ModelConfig`."""
        return cls(points_per_keypoint=config.points_per_keypoint, model_dim=config.model_dim)

    def forward(self, keypoints: torch.Tensor, keypoint_features: torch.Tensor) -> Reconstruction:
        """Reconstruct the object.

        Args:
            keypoints: (B, K, 3) float, metres, centred object frame.
            keypoint_features: (B, K, D) float.

        Returns:
            :class:`Reconstruction`. Decoder output channels 3m..3m+2 of keypoint j become row P·j+m.
        """
        batch, num_keypoints, _ = keypoints.shape
        position = self.position_encoder(keypoints.transpose(1, 2))
        features = self.feature_mlp(keypoint_features.transpose(1, 2))
        global_feature = torch.mean(position + features, dim=2, keepdim=True)
        decoded = self.shape_decoder(torch.cat([global_feature.expand(-1, -1, num_keypoints), features], dim=1))
        deltas = decoded.transpose(1, 2).reshape(batch, num_keypoints * self.points_per_keypoint, 3)
        points = deltas + keypoints.repeat_interleave(self.points_per_keypoint, dim=1)
        return Reconstruction(points, deltas)


def reference_key_map() -> list[tuple[str, str]]:
    """Key-prefix pairs (ours, reference) relative to the module; reference top-level name ``reconstructor``."""
    return [(r"position_encoder\.", r"pos_enc\."), (r"feature_mlp\.", r"mlp\.")]
