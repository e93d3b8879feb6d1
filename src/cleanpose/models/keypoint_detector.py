"""Instance-adaptive keypoint detector (AG-Pose IAKD; docs/model.md §5).

A fixed set of K learned queries attends to the fused per-point features of one object. Each adapted query
then scores every point by cosine similarity, and a sharp softmax over the points turns the scores into a
heat map: a keypoint is a convex combination of the object's points.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cleanpose.config import KeypointDetectorConfig
from cleanpose.errors import ConfigError
from cleanpose.models.attention import AttentionLayer, attention_layer_key_map

__all__ = ["InstanceAdaptiveKeypointDetector", "KeypointDetection", "reference_key_map"]


class KeypointDetection(NamedTuple):
    """Output of :class:`InstanceAdaptiveKeypointDetector`."""

    queries: torch.Tensor
    """(B, K, D) float: the keypoint queries after the attention layer (reference ``batch_kpt_query``)."""
    heat_map: torch.Tensor
    """(B, K, N) float: per keypoint, softmax weights over the N points (each row sums to 1)."""


class InstanceAdaptiveKeypointDetector(nn.Module):
    """Learned keypoint queries adapted to one instance, and their heat maps over the points.

    Args:
        num_keypoints: K, number of keypoints (reference ``kpt_num``).
        model_dim: query and feature width D (reference ``query_dim``).
        num_blocks: attention blocks (reference ``AttnLayer.block_num``).
        num_heads: attention heads.
        ffn_dim: feed-forward hidden width.
        temperature: softmax temperature applied to the cosine scores.
        dropout: attention-stack dropout (0 in CleanPose).
    """

    def __init__(
        self,
        num_keypoints: int = 96,
        model_dim: int = 256,
        num_blocks: int = 4,
        num_heads: int = 4,
        ffn_dim: int = 256,
        temperature: float = 0.1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.temperature = temperature
        self.keypoint_queries = nn.Parameter(torch.empty(num_keypoints, model_dim))
        nn.init.xavier_normal_(self.keypoint_queries)
        self.attention_layer = AttentionLayer(num_blocks, model_dim, num_heads, ffn_dim, dropout)

    @classmethod
    def from_config(cls, config: KeypointDetectorConfig) -> InstanceAdaptiveKeypointDetector:
        """Build from the ``keypoint_detector`` section of :class:`cleanpose.config.ModelConfig`."""
        attention = config.attention
        if attention.model_dim != config.query_dim:
            raise ConfigError(
                f"keypoint_detector.attention.model_dim {attention.model_dim} differs from query_dim "
                f"{config.query_dim}; the queries are the attention tokens"
            )
        return cls(
            num_keypoints=config.num_keypoints,
            model_dim=config.query_dim,
            num_blocks=attention.num_blocks,
            num_heads=attention.num_heads,
            ffn_dim=attention.ffn_dim,
            dropout=attention.dropout,
        )

    def forward(self, features: torch.Tensor) -> KeypointDetection:
        """Detect keypoints.

        Args:
            features: (B, D, N) float, per-point fused features ``cat(point_features, rgb_features)`` along
                channels, point features first.

        Returns:
            :class:`KeypointDetection` with ``queries`` (B, K, D) and ``heat_map`` (B, K, N).
            ``heat_map[b, k] = softmax_n(cos(queries[b, k], features[b, :, n]) / temperature)`` with the
            cosine computed as ``q·f / (‖q‖‖f‖ + 1e-7)``.
        """
        batch = features.shape[0]
        queries = self.keypoint_queries.unsqueeze(0).expand(batch, -1, -1)
        queries = self.attention_layer(queries, features.transpose(1, 2))
        query_norm = torch.linalg.vector_norm(queries, dim=2, keepdim=True)
        feature_norm = torch.linalg.vector_norm(features, dim=1, keepdim=True)
        cosine = torch.bmm(queries, features) / (query_norm * feature_norm + 1e-7)
        heat_map = torch.softmax(cosine / self.temperature, dim=2)
        return KeypointDetection(queries, heat_map)


def reference_key_map() -> list[tuple[str, str]]:
    """Key-prefix pairs (ours, reference) relative to the module; reference top-level name ``IAKD``."""
    return [(r"keypoint_queries", r"kpt_query")] + attention_layer_key_map(r"attention_layer\.", r"attn_layer\.")
