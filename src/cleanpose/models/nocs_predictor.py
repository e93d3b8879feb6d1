"""Per-category NOCS coordinates of the keypoints by bin classification (AG-Pose; docs/model.md §8).

Each NOCS axis is split into ``num_bins`` equal bins over [-0.5, 0.5). The head predicts, for every category,
a distribution over the bins of each axis; the object's own category is selected and the coordinate is the
expectation of the bin centres.
"""

from __future__ import annotations

import torch
from torch import nn

from cleanpose.config import NocsPredictorConfig
from cleanpose.models.attention import SelfAttentionLayer, self_attention_layer_key_map

__all__ = ["NocsPredictor", "bin_centres", "reference_key_map"]


def bin_centres(num_bins: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Centres of ``num_bins`` equal bins covering [-0.5, 0.5), computed as the reference does.

    Args:
        num_bins: number of bins.
        dtype: dtype of the result (the reference uses float32).
        device: device of the result.

    Returns:
        (num_bins,) tensor: ``linspace(-0.5, 0.5 - 1/num_bins, num_bins) + 1/(2·num_bins)``.
    """
    width = 1 / num_bins
    return torch.linspace(-0.5, 0.5 - width, num_bins, dtype=dtype, device=device) + width / 2


class NocsPredictor(nn.Module):
    """Keypoint NOCS coordinates from keypoint features and the object category.

    Args:
        num_categories: C; one set of bin logits per category.
        num_bins: bins per NOCS axis.
        model_dim: keypoint feature width D.
        hidden_dim: width of the hidden 1x1 convolutions.
        num_blocks: self-attention blocks.
        num_heads: attention heads.
        ffn_dim: feed-forward width of the attention blocks.
        dropout: attention-stack dropout (0 in CleanPose).
    """

    bin_centres: torch.Tensor

    def __init__(
        self,
        num_categories: int = 6,
        num_bins: int = 64,
        model_dim: int = 256,
        hidden_dim: int = 512,
        num_blocks: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_categories = num_categories
        self.num_bins = num_bins
        self.feature_mlp = nn.Sequential(
            nn.Conv1d(model_dim, hidden_dim, 1),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Conv1d(hidden_dim, hidden_dim, 1),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Conv1d(hidden_dim, model_dim, 1),
            nn.BatchNorm1d(model_dim),
        )
        self.self_attention_layer = SelfAttentionLayer(num_blocks, model_dim, num_heads, ffn_dim, dropout)
        self.bin_mlp = nn.Sequential(
            nn.Conv1d(model_dim, hidden_dim, 1),
            nn.ReLU(),
            nn.Conv1d(hidden_dim, hidden_dim, 1),
            nn.ReLU(),
            nn.Conv1d(hidden_dim, num_categories * 3 * num_bins, 1),
        )
        # A fixed grid, not a weight: kept out of the state dict as in the reference.
        self.register_buffer("bin_centres", bin_centres(num_bins).view(num_bins, 1), persistent=False)

    @classmethod
    def from_config(cls, config: NocsPredictorConfig) -> NocsPredictor:
        """Build from the ``nocs_predictor`` section of :class:`cleanpose.config.ModelConfig`."""
        attention = config.attention
        return cls(
            num_categories=config.num_categories,
            num_bins=config.num_bins,
            model_dim=attention.model_dim,
            num_blocks=attention.num_blocks,
            num_heads=attention.num_heads,
            ffn_dim=attention.ffn_dim,
            dropout=attention.dropout,
        )

    def forward(self, keypoint_features: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """Predict keypoint NOCS coordinates.

        Args:
            keypoint_features: (B, K, D) float.
            categories: (B,) or (B, 1) int64, 0-based category of each object.

        Returns:
            (B, K, 3) float, NOCS coordinates in (-0.5, 0.5): for axis a,
            ``Σ_i softmax_i(logits[b, category_b, a, i, k]) · centre_i``.
        """
        batch, num_keypoints, _ = keypoint_features.shape
        features = self.feature_mlp(keypoint_features.transpose(1, 2)).transpose(1, 2)
        features = self.self_attention_layer(features)
        logits = self.bin_mlp(features.transpose(1, 2))
        logits = logits.view(batch * self.num_categories, 3 * self.num_bins, num_keypoints)
        rows = categories.reshape(-1) + torch.arange(batch, device=logits.device) * self.num_categories
        logits = logits.index_select(0, rows).view(batch, 3, self.num_bins, num_keypoints)
        probabilities = torch.softmax(logits, dim=2).permute(0, 3, 1, 2)
        return torch.matmul(probabilities, self.bin_centres).squeeze(-1)


def reference_key_map() -> list[tuple[str, str]]:
    """Key-prefix pairs (ours, reference) relative to the module; reference top-level name ``nocs_predictor``."""
    return [
        (r"feature_mlp\.", r"nocs_mlp\."),
        (r"bin_mlp\.", r"atten_mlp\."),
    ] + self_attention_layer_key_map(r"self_attention_layer\.", r"self_attn_layer\.")
