"""Geometric-aware feature aggregator (AG-Pose GAFA; docs/model.md §6).

Each block refines the keypoint features twice: first from the keypoint's k nearest object points (their
features plus an encoding of their offsets, weighted by cosine similarity to the keypoint), then from the
other keypoints (a global mean feature plus absolute and relative position encodings).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cleanpose.config import FeatureAggregatorConfig

__all__ = ["GeometricAwareBlock", "GeometricAwareFeatureAggregator", "reference_key_map"]


def _position_mlp(model_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, model_dim), nn.ReLU(), nn.Linear(model_dim, model_dim)
    )


class GeometricAwareBlock(nn.Module):
    """One GAFA block: kNN aggregation from the points, then keypoint-to-keypoint fusion.

    Args:
        num_neighbors: k, points gathered around each keypoint.
        model_dim: feature width D.
        tau: softmax temperature of the cosine weights over the k neighbors.
    """

    def __init__(self, num_neighbors: int = 16, model_dim: int = 256, tau: float = 5.0):
        super().__init__()
        self.num_neighbors = num_neighbors
        self.tau = tau
        self.query_mlp = nn.Sequential(
            nn.Conv1d(model_dim, model_dim, 1), nn.BatchNorm1d(model_dim), nn.ReLU(), nn.Conv1d(model_dim, model_dim, 1)
        )
        self.neighbor_position_mlp = _position_mlp(model_dim)
        self.neighbor_mlp = nn.Sequential(
            nn.Linear(2 * model_dim, model_dim), nn.ReLU(), nn.Linear(model_dim, model_dim)
        )
        self.relative_position_mlp = _position_mlp(model_dim)
        self.absolute_position_mlp = _position_mlp(model_dim)
        self.fuse_mlp = nn.Sequential(
            nn.Conv1d(3 * model_dim, model_dim, 1),
            nn.BatchNorm1d(model_dim),
            nn.ReLU(),
            nn.Conv1d(model_dim, model_dim, 1),
            nn.BatchNorm1d(model_dim),
            nn.ReLU(),
        )
        self.output_mlp = nn.Sequential(nn.Linear(model_dim, model_dim), nn.ReLU(), nn.Linear(model_dim, model_dim))

    def forward(
        self,
        keypoint_features: torch.Tensor,
        keypoints: torch.Tensor,
        point_features: torch.Tensor,
        points: torch.Tensor,
    ) -> torch.Tensor:
        """Refine keypoint features.

        Args:
            keypoint_features: (B, K, D) float.
            keypoints: (B, K, 3) float, metres, centred object frame (detached by the caller).
            point_features: (B, N, D) float.
            points: (B, N, 3) float, metres, same frame as ``keypoints``.

        Returns:
            (B, K, D) float, refined keypoint features.
        """
        num_keypoints, width = keypoints.shape[1], point_features.shape[2]
        distances = torch.linalg.vector_norm(keypoints.unsqueeze(2) - points.unsqueeze(1), dim=3)
        # Sorted ascending like the reference's argsort; ties only occur between duplicated points.
        neighbor_index = distances.topk(self.num_neighbors, dim=2, largest=False, sorted=True).indices
        flat_index = neighbor_index.flatten(1).unsqueeze(2)
        neighbor_points = points.gather(1, flat_index.expand(-1, -1, 3)).view(*neighbor_index.shape, 3)
        neighbor_features = point_features.gather(1, flat_index.expand(-1, -1, width))
        neighbor_features = neighbor_features.view(*neighbor_index.shape, width)

        residual = keypoint_features
        queries = self.query_mlp(keypoint_features.transpose(1, 2)).transpose(1, 2)
        offsets = self.neighbor_position_mlp(keypoints.unsqueeze(2) - neighbor_points)
        neighbor_features = self.neighbor_mlp(torch.cat([neighbor_features, offsets], dim=-1))
        # Materialised like the reference: cosine_similarity of a broadcast, non-contiguous view rounds differently.
        queries = queries.unsqueeze(2).repeat(1, 1, self.num_neighbors, 1)
        similarity = F.cosine_similarity(queries, neighbor_features, dim=-1, eps=1e-8)
        weights = torch.softmax(similarity / self.tau, dim=2)
        aggregated = torch.matmul(weights.unsqueeze(2), neighbor_features).squeeze(2)
        keypoint_features = F.relu(aggregated + residual)

        residual = keypoint_features
        absolute = self.absolute_position_mlp(keypoints)
        relative = self.relative_position_mlp(keypoints.unsqueeze(2) - keypoints.unsqueeze(1)).mean(dim=2)
        position = absolute + relative
        global_feature = keypoint_features.mean(dim=1, keepdim=True)
        fused = torch.cat(
            [
                keypoint_features.transpose(1, 2),
                global_feature.transpose(1, 2).expand(-1, -1, num_keypoints),
                position.transpose(1, 2),
            ],
            dim=1,
        )
        keypoint_features = F.relu(self.fuse_mlp(fused).transpose(1, 2) + residual)
        return F.relu(keypoint_features + self.output_mlp(keypoint_features))


class GeometricAwareFeatureAggregator(nn.Module):
    """A chain of :class:`GeometricAwareBlock`, one neighborhood size per block.

    Args:
        num_neighbors: k of each block, in order (reference ``GAFA.K``); its length is the block count.
        model_dim: feature width D.
        tau: cosine-softmax temperature in every block.
    """

    def __init__(self, num_neighbors: Sequence[int] = (16, 32), model_dim: int = 256, tau: float = 5.0):
        super().__init__()
        self.blocks = nn.ModuleList(GeometricAwareBlock(k, model_dim, tau) for k in num_neighbors)

    @classmethod
    def from_config(cls, config: FeatureAggregatorConfig) -> GeometricAwareFeatureAggregator:
        """Build from the ``feature_aggregator`` section of :class:`cleanpose.config.ModelConfig`."""
        return cls(num_neighbors=config.num_neighbors, model_dim=config.model_dim)

    def forward(
        self,
        keypoint_features: torch.Tensor,
        keypoints: torch.Tensor,
        point_features: torch.Tensor,
        points: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            keypoint_features: (B, K, D) float.
            keypoints: (B, K, 3) float, metres, centred frame; pass it detached (the reference does).
            point_features: (B, N, D) float.
            points: (B, N, 3) float, metres, same frame.

        Returns:
            (B, K, D) float.
        """
        for block in self.blocks:
            keypoint_features = block(keypoint_features, keypoints, point_features, points)
        return keypoint_features


def reference_key_map() -> list[tuple[str, str]]:
    """Key-prefix pairs (ours, reference) relative to the module; reference top-level name ``GAFA``."""
    block, ref_block = r"blocks\.(\d+)\.", r"GAFA_blocks\.(\d+)\."
    names = [
        ("query_mlp", "fc_in"),
        ("neighbor_position_mlp", "fc_delta"),
        ("neighbor_mlp", "fc_delta_1"),
        ("relative_position_mlp", "fc_delta_l"),
        ("absolute_position_mlp", "fc_delta_abs"),
        ("fuse_mlp", "fuse_mlp"),
        ("output_mlp", "out_mlp"),
    ]
    return [(block + ours + r"\.", ref_block + ref + r"\.") for ours, ref in names]
