"""Pre-norm transformer blocks shared by the keypoint detector, the front-door encoder and the NOCS head.

Two block kinds, as in AG-Pose / CleanPose (`model/Net_modules.py: AttnBlock, SelfAttnBlock`):

* :class:`AttentionBlock`: queries attend to a memory (cross-attention), then to themselves
  (self-attention), then pass through a feed-forward network. Every sub-layer is pre-norm with a residual
  connection; the memory is **not** normalised.
* :class:`SelfAttentionBlock`: self-attention then feed-forward, both pre-norm with residuals.

Attention is :class:`torch.nn.MultiheadAttention` with ``batch_first=True``, so the projection weights are
packed (``in_proj_weight`` rows 0..D-1 project queries, D..2D-1 keys, 2D..3D-1 values) exactly as in the
reference checkpoints. ``need_weights`` keeps its default (True) as in the reference: PyTorch then takes the
same explicit-softmax path and the outputs match bit for bit, whereas the fused ``need_weights=False`` path
rounds differently (up to 1e-4 relative on the NOCS head's output with random weights). The fused path
(``need_weights=False``: PyTorch's ``scaled_dot_product_attention``, flash / memory-efficient kernels on CUDA)
is the fast path: :func:`set_fused_attention` switches every attention layer of a module to it
(``model.fused_attention``).

Key maps. Every model file has ``reference_key_map() -> list[tuple[str, str]]``: pairs ``(ours, reference)``
of key *prefix* patterns, relative to that module. Both sides are regular expressions that use only ``\\.``
for a literal dot and ``(\\d+)`` for an index; the two sides have the same groups in the same order, so a
pair can be applied in either direction: match one side at the start of a key, substitute its groups into
the other side, keep the rest of the key. Keys that match no pair keep their name.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "AttentionBlock",
    "AttentionLayer",
    "SelfAttentionBlock",
    "SelfAttentionLayer",
    "attention_layer_key_map",
    "self_attention_layer_key_map",
    "set_fused_attention",
]


def set_fused_attention(module: nn.Module, enabled: bool) -> None:
    """Switch every cleanpose attention layer inside ``module`` to the fused (True) or explicit path.

    A layer takes part when it has a ``use_fused_attention`` attribute (the blocks here and the PointBERT
    teacher's attention). timm's ViT blocks keep their own setting.
    """
    for child in module.modules():
        if hasattr(child, "use_fused_attention"):
            child.use_fused_attention = enabled


def _feed_forward(model_dim: int, ffn_dim: int, dropout: float) -> nn.Sequential:
    # Indices 0 and 3 hold the weights, as in the reference (`ffn.0`, `ffn.3`).
    return nn.Sequential(
        nn.Linear(model_dim, ffn_dim),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(ffn_dim, model_dim),
    )


class AttentionBlock(nn.Module):
    """Pre-norm cross-attention + self-attention + feed-forward block.

    ``q = q + CrossMHA(LN_cross(q), memory, memory)``; ``q = q + SelfMHA(LN_self(q))``;
    ``q = q + FFN(LN_ffn(q))`` with ``FFN = Linear -> ReLU -> Dropout -> Linear``.

    Args:
        model_dim: width of queries and memory.
        num_heads: attention heads (``model_dim`` must be divisible by it).
        ffn_dim: hidden width of the feed-forward network.
        dropout: dropout on attention weights, residual branches and the FFN hidden layer (0 in CleanPose).
    """

    def __init__(self, model_dim: int = 256, num_heads: int = 4, ffn_dim: int = 256, dropout: float = 0.0):
        super().__init__()
        self.cross_attention = nn.MultiheadAttention(model_dim, num_heads, dropout=dropout, batch_first=True)
        self.self_attention = nn.MultiheadAttention(model_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(model_dim)
        self.norm_self = nn.LayerNorm(model_dim)
        self.norm_ffn = nn.LayerNorm(model_dim)
        self.dropout = nn.Dropout(dropout)
        self.ffn = _feed_forward(model_dim, ffn_dim, dropout)
        self.use_fused_attention = False

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Update the queries.

        Args:
            queries: (B, Q, D) float.
            memory: (B, M, D) float, attended to as keys and values without normalisation.

        Returns:
            (B, Q, D) float, the updated queries.
        """
        explicit = not self.use_fused_attention
        normed = self.norm_cross(queries)
        attended, _ = self.cross_attention(normed, memory, memory, need_weights=explicit)
        queries = queries + self.dropout(attended)
        normed = self.norm_self(queries)
        attended, _ = self.self_attention(normed, normed, normed, need_weights=explicit)
        queries = queries + self.dropout(attended)
        return queries + self.dropout(self.ffn(self.norm_ffn(queries)))


class SelfAttentionBlock(nn.Module):
    """Pre-norm self-attention + feed-forward block.

    ``x = x + SelfMHA(LN_self(x))``; ``x = x + FFN(LN_ffn(x))``.

    Args:
        model_dim: token width.
        num_heads: attention heads.
        ffn_dim: hidden width of the feed-forward network.
        dropout: dropout probability (0 in CleanPose).
    """

    def __init__(self, model_dim: int = 256, num_heads: int = 4, ffn_dim: int = 256, dropout: float = 0.0):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(model_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(model_dim)
        self.norm_ffn = nn.LayerNorm(model_dim)
        self.dropout = nn.Dropout(dropout)
        self.ffn = _feed_forward(model_dim, ffn_dim, dropout)
        self.use_fused_attention = False

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Args:
            tokens: (B, T, D) float.

        Returns:
            (B, T, D) float.
        """
        normed = self.norm_self(tokens)
        attended, _ = self.self_attention(normed, normed, normed, need_weights=not self.use_fused_attention)
        tokens = tokens + self.dropout(attended)
        return tokens + self.dropout(self.ffn(self.norm_ffn(tokens)))


class AttentionLayer(nn.Module):
    """A stack of :class:`AttentionBlock` sharing one memory.

    Args:
        num_blocks: number of blocks.
        model_dim: width of queries and memory.
        num_heads: attention heads per block.
        ffn_dim: feed-forward hidden width.
        dropout: dropout probability.
    """

    def __init__(
        self, num_blocks: int = 4, model_dim: int = 256, num_heads: int = 4, ffn_dim: int = 256, dropout: float = 0.0
    ):
        super().__init__()
        self.blocks = nn.ModuleList(AttentionBlock(model_dim, num_heads, ffn_dim, dropout) for _ in range(num_blocks))

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Args:
            queries: (B, Q, D) float.
            memory: (B, M, D) float.

        Returns:
            (B, Q, D) float.
        """
        for block in self.blocks:
            queries = block(queries, memory)
        return queries


class SelfAttentionLayer(nn.Module):
    """A stack of :class:`SelfAttentionBlock`.

    Args:
        num_blocks: number of blocks.
        model_dim: token width.
        num_heads: attention heads per block.
        ffn_dim: feed-forward hidden width.
        dropout: dropout probability.
    """

    def __init__(
        self, num_blocks: int = 2, model_dim: int = 256, num_heads: int = 4, ffn_dim: int = 256, dropout: float = 0.0
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(model_dim, num_heads, ffn_dim, dropout) for _ in range(num_blocks)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Args:
            tokens: (B, T, D) float.

        Returns:
            (B, T, D) float.
        """
        for block in self.blocks:
            tokens = block(tokens)
        return tokens


def attention_layer_key_map(ours: str, reference: str) -> list[tuple[str, str]]:
    """Key-prefix pairs renaming an :class:`AttentionLayer` at ``ours`` to a reference ``AttnLayer``.

    Args:
        ours: escaped regex prefix of the layer in our module, e.g. ``r"attention_layer\\."``.
        reference: escaped regex prefix of the reference layer, e.g. ``r"attn_layer\\."``.

    Returns:
        ``(ours, reference)`` prefix patterns (see the module docstring).
    """
    block, ref_block = ours + r"blocks\.(\d+)\.", reference + r"attn_blocks\.(\d+)\."
    return [
        (block + r"cross_attention\.", ref_block + r"multihead_attn\."),
        (block + r"self_attention\.", ref_block + r"self_attn\."),
        (block + r"norm_cross\.", ref_block + r"norm1\."),
        (block + r"norm_self\.", ref_block + r"norm2\."),
        (block + r"norm_ffn\.", ref_block + r"norm3\."),
        (block + r"ffn\.", ref_block + r"ffn\."),
    ]


def self_attention_layer_key_map(ours: str, reference: str) -> list[tuple[str, str]]:
    """Key-prefix pairs renaming a :class:`SelfAttentionLayer` to a reference ``SelfAttnLayer``.

    Args:
        ours: escaped regex prefix of the layer in our module.
        reference: escaped regex prefix of the reference layer.

    Returns:
        ``(ours, reference)`` prefix patterns (see the module docstring).
    """
    block, ref_block = ours + r"blocks\.(\d+)\.", reference + r"attn_blocks\.(\d+)\."
    return [
        (block + r"self_attention\.", ref_block + r"self_attn\."),
        (block + r"norm_self\.", ref_block + r"norm1\."),
        (block + r"norm_ffn\.", ref_block + r"norm2\."),
        (block + r"ffn\.", ref_block + r"ffn\."),
    ]
