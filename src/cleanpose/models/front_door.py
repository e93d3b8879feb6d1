"""Front-door causal module of CleanPose (docs/model.md §7).

Front-door adjustment replaces ``P(Y | X)`` by ``Σ_m P(m | X) Σ_x' P(Y | m, x') P(x')``: the keypoint
features (the mediator) are combined with features of *other* instances of the same category, drawn from a
per-category confounder dictionary, so that the prediction is less tied to the visual bias of one instance.

* :class:`ConfounderQueue` is the dictionary: per category, a FIFO of Q feature vectors (oldest first),
  refilled during training with the mean post-causal keypoint feature of each training object.
* :class:`FrontDoorEncoder` fuses the keypoint features with the S features drawn for the object's category:
  a self-attention branch on the keypoints and a cross-attention branch whose memory is the drawn features,
  merged by a learned sigmoid gate with the original features.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from cleanpose.config import FrontDoorConfig
from cleanpose.errors import CheckpointError, ConfigError
from cleanpose.models.attention import (
    AttentionLayer,
    SelfAttentionLayer,
    attention_layer_key_map,
    self_attention_layer_key_map,
)

__all__ = ["ConfounderQueue", "FrontDoorEncoder", "reference_key_map"]


class FrontDoorEncoder(nn.Module):
    """Gated fusion of keypoint features with drawn confounder features.

    ``local = SelfAttn(local_projection(L))``; ``cross = CrossAttn(global_projection(L), G)``;
    ``final = LayerNorm(local + cross)``; ``gate = sigmoid(intervened_gate(final) + original_gate(L))``;
    ``out = gate·final + (1 − gate)·L``.

    Args:
        model_dim: feature width D (reference ``feat_dim``).
        cross_blocks: blocks of the cross-attention stack (reference ``AttnLayer.block_num``).
        cross_heads: heads of the cross-attention stack.
        cross_ffn_dim: feed-forward width of the cross-attention stack.
        self_blocks: blocks of the self-attention stack (reference ``SelfAttnLayer.block_num``).
        self_heads: heads of the self-attention stack.
        self_ffn_dim: feed-forward width of the self-attention stack.
        dropout: attention-stack dropout (0 in CleanPose).
    """

    def __init__(
        self,
        model_dim: int = 256,
        cross_blocks: int = 4,
        cross_heads: int = 4,
        cross_ffn_dim: int = 256,
        self_blocks: int = 2,
        self_heads: int = 4,
        self_ffn_dim: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.cross_attention_layer = AttentionLayer(cross_blocks, model_dim, cross_heads, cross_ffn_dim, dropout)
        self.self_attention_layer = SelfAttentionLayer(self_blocks, model_dim, self_heads, self_ffn_dim, dropout)
        self.local_projection = nn.Linear(model_dim, model_dim)
        self.global_projection = nn.Linear(model_dim, model_dim)
        self.norm = nn.LayerNorm(model_dim)
        self.intervened_gate = nn.Linear(model_dim, 1)
        self.original_gate = nn.Linear(model_dim, 1)

    @classmethod
    def from_config(cls, config: FrontDoorConfig) -> FrontDoorEncoder:
        """Build from the ``front_door`` section of :class:`cleanpose.config.ModelConfig`."""
        for name in ("cross_attention", "self_attention"):
            if getattr(config, name).model_dim != config.model_dim:
                raise ConfigError(
                    f"front_door.{name}.model_dim {getattr(config, name).model_dim} differs from "
                    f"front_door.model_dim {config.model_dim}"
                )
        if config.cross_attention.dropout != config.self_attention.dropout:
            raise ConfigError(
                f"front_door.cross_attention.dropout {config.cross_attention.dropout} differs from "
                f"front_door.self_attention.dropout {config.self_attention.dropout}; expected one value"
            )
        return cls(
            model_dim=config.model_dim,
            cross_blocks=config.cross_attention.num_blocks,
            cross_heads=config.cross_attention.num_heads,
            cross_ffn_dim=config.cross_attention.ffn_dim,
            self_blocks=config.self_attention.num_blocks,
            self_heads=config.self_attention.num_heads,
            self_ffn_dim=config.self_attention.ffn_dim,
            dropout=config.cross_attention.dropout,
        )

    def forward(self, keypoint_features: torch.Tensor, confounder_features: torch.Tensor) -> torch.Tensor:
        """Apply the front-door adjustment.

        Args:
            keypoint_features: (B, K, D) float, L (the GAFA output).
            confounder_features: (B, S, D) float, G: the queue features drawn for each object's category.

        Returns:
            (B, K, D) float.
        """
        local = self.self_attention_layer(self.local_projection(keypoint_features))
        cross = self.cross_attention_layer(self.global_projection(keypoint_features), confounder_features)
        final = self.norm(local + cross)
        gate = torch.sigmoid(self.intervened_gate(final) + self.original_gate(keypoint_features))
        return gate * final + (1 - gate) * keypoint_features


def reference_key_map() -> list[tuple[str, str]]:
    """Key-prefix pairs (ours, reference) relative to the module; reference top-level name ``FD_Encoder``."""
    return (
        attention_layer_key_map(r"cross_attention_layer\.", r"cross_attn_layer\.")
        + self_attention_layer_key_map(r"self_attention_layer\.", r"self_attn_layer\.")
        + [
            (r"local_projection\.", r"mlp_local\."),
            (r"global_projection\.", r"mlp_global\."),
            (r"norm\.", r"ln\."),
            (r"intervened_gate\.", r"aug_linear\."),
            (r"original_gate\.", r"ori_linear\."),
        ]
    )


class ConfounderQueue(nn.Module):
    """Per-category FIFO of confounder features (the reference's ``tensor_list``).

    State (buffers, so it follows ``.to()`` and is saved in the state dict):

    * ``features``: (C, Q, D) float32. ``features[c, q]`` is entry q of category c's list in the
      reference's order, oldest first.
    * ``filled``: () bool. False until :meth:`fill` or a state dict with a filled queue is loaded; drawing
      from an unfilled queue raises :class:`~cleanpose.errors.CheckpointError`.

    Args:
        num_categories: C.
        queue_length: Q, entries per category (80 for NOCS, 100 for HouseCat6D).
        model_dim: D.
    """

    features: torch.Tensor
    filled: torch.Tensor

    def __init__(self, num_categories: int = 6, queue_length: int = 80, model_dim: int = 256):
        super().__init__()
        self.register_buffer("features", torch.zeros(num_categories, queue_length, model_dim))
        self.register_buffer("filled", torch.tensor(False))
        # Host-side copy of `filled`, so that checking it in every forward does not sync with the device.
        self._filled_on_host = False
        # False inside `trusted_indices`: `draw` then skips the value check of a given queue_idx (a device sync).
        self._check_index_values = True
        self.register_load_state_dict_post_hook(ConfounderQueue._sync_filled_flag)

    @classmethod
    def from_config(cls, config: FrontDoorConfig, num_categories: int) -> ConfounderQueue:
        """Build from the ``front_door`` section of :class:`cleanpose.config.ModelConfig` and the category count."""
        return cls(num_categories, config.queue_length, config.model_dim)

    @staticmethod
    def _sync_filled_flag(module: ConfounderQueue, incompatible_keys) -> None:
        module._filled_on_host = bool(module.filled)

    @property
    def num_categories(self) -> int:
        """C, the number of categories."""
        return self.features.shape[0]

    @property
    def queue_length(self) -> int:
        """Q, entries per category."""
        return self.features.shape[1]

    @property
    def is_filled(self) -> bool:
        """Whether the queue holds real features (set by :meth:`fill` or by loading a filled state dict)."""
        return self._filled_on_host

    @torch.no_grad()
    def fill(self, features: torch.Tensor) -> None:
        """Replace the whole queue.

        Args:
            features: (C, Q, D) float, entry q of category c at ``[c, q]``, oldest first; any device.

        Raises:
            ValueError: on a shape other than (C, Q, D) of this queue.
        """
        if tuple(features.shape) != tuple(self.features.shape):
            raise ValueError(
                f"confounder queue features have shape {tuple(features.shape)}; expected "
                f"{tuple(self.features.shape)} (categories, queue length, feature dim)"
            )
        self.features.copy_(features)
        self.filled.fill_(True)
        self._filled_on_host = True

    def sample_indices(self, num_samples: int, random_state: np.random.RandomState | None = None) -> torch.Tensor:
        """The reference draw: per category c = 0..C−1 in order, ``choice(Q, S, replace=False)``.

        This is the one place in cleanpose that may use NumPy's global legacy RNG (style guide, docs/model.md Q3):
        with ``random_state=None`` it draws from ``numpy.random``'s global ``RandomState`` exactly as the
        reference does, so a seeded reference run can be reproduced. Pass a ``RandomState`` to keep the
        draws independent of global state.

        Args:
            num_samples: S, entries per category, at most Q.
            random_state: legacy NumPy generator; None means NumPy's global one.

        Returns:
            (C, S) int64 tensor on the CPU; row c holds category c's draw in draw order.
        """
        if not 0 < num_samples <= self.queue_length:
            raise ValueError(f"num_samples {num_samples} must lie in [1, {self.queue_length}] (queue length)")
        choice = np.random.choice if random_state is None else random_state.choice
        rows = [choice(self.queue_length, num_samples, replace=False) for _ in range(self.num_categories)]
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def draw(
        self,
        num_samples: int,
        *,
        queue_idx: torch.Tensor | None = None,
        random_state: np.random.RandomState | None = None,
    ) -> torch.Tensor:
        """Draw S features per category.

        Args:
            num_samples: S (reference ``select_num``).
            queue_idx: optional (C, S) int64 tensor, any device: row c lists the entries of category c to
                take, in order. When given, no random number is drawn. A (B, C, S) tensor holds one such
                draw per object (objects of several images in one forward, each with its image's draw).
            random_state: legacy NumPy generator for the default sampler (see :meth:`sample_indices`);
                ignored when ``queue_idx`` is given.

        Returns:
            (C, S, D) float32 on the queue's device, ``out[c, j] = features[c, queue_idx[c, j]]``;
            (B, C, S, D) for a (B, C, S) ``queue_idx``, ``out[b, c, j] = features[c, queue_idx[b, c, j]]``.

        Raises:
            CheckpointError: the queue was never filled (no queue in the checkpoint).
            ValueError: ``queue_idx`` has the wrong shape or dtype, or values outside [0, Q).
        """
        if not self._filled_on_host:
            raise CheckpointError(
                "the confounder queue is missing (never filled): load a checkpoint that carries a queue "
                "(convert the reference one with --queue tensor_list.pkl) or call ConfounderQueue.fill()"
            )
        device = self.features.device
        if queue_idx is None:
            queue_idx = self.sample_indices(num_samples, random_state)
            if device.type == "cuda":
                queue_idx = queue_idx.pin_memory()
            queue_idx = queue_idx.to(device, non_blocking=True)
        else:
            queue_idx = self.check_indices(queue_idx, num_samples, values=self._check_index_values).to(device)
        rows = torch.arange(self.num_categories, device=device).unsqueeze(1)
        return self.features[rows, queue_idx]

    def check_indices(self, queue_idx: torch.Tensor, num_samples: int, *, values: bool = True) -> torch.Tensor:
        """``queue_idx`` as int64 after checking its shape, dtype and (with ``values``) its range.

        Args:
            queue_idx: (C, S) or (B, C, S) integer tensor, any device (see :meth:`draw`).
            num_samples: S.
            values: also check that every entry lies in [0, Q); this reads two numbers back to the host
                (a device synchronisation for a CUDA tensor, none for a CPU one).

        Returns:
            ``queue_idx`` as int64, same device.

        Raises:
            ValueError: wrong shape or dtype, or (with ``values``) an entry outside [0, Q).
        """
        expected = (self.num_categories, num_samples)
        if tuple(queue_idx.shape[-2:]) != expected or queue_idx.dim() not in (2, 3):
            raise ValueError(
                f"queue_idx has shape {tuple(queue_idx.shape)}; expected {expected} (categories, select_num)"
                " or (objects, categories, select_num)"
            )
        if queue_idx.dtype.is_floating_point or queue_idx.dtype.is_complex or queue_idx.dtype == torch.bool:
            raise ValueError(f"queue_idx has dtype {queue_idx.dtype}; expected an integer dtype (int64)")
        if not values:
            return queue_idx.long()
        # Reads two values back to the host: only on this caller-supplied (fidelity/eval) path, never in training.
        low, high = int(queue_idx.min()), int(queue_idx.max())
        if low < 0 or high >= self.queue_length:
            raise ValueError(
                f"queue_idx values span [{low}, {high}]; expected indices in [0, {self.queue_length}) (queue length)"
            )
        return queue_idx.long()

    @contextlib.contextmanager
    def trusted_indices(self) -> Iterator[None]:
        """Within this context :meth:`draw` checks a given ``queue_idx``'s shape and dtype but not its values.

        The value check reads the indices' minimum and maximum back to the host, a device synchronisation for
        CUDA indices, which a CUDA-graph capture forbids. The caller checks every draw itself before it
        reaches the device (:class:`~cleanpose.models.cuda_graph.GraphedEvalForward` checks the host-side
        indices with :meth:`check_indices` before copying them into its static buffer); out-of-range
        indices inside this context are not caught (negative ones count from the end, as in indexing).
        The previous setting is restored on exit.
        """
        previous = self._check_index_values
        self._check_index_values = False
        try:
            yield
        finally:
            self._check_index_values = previous

    @torch.no_grad()
    def push(self, categories: torch.Tensor, pooled: torch.Tensor) -> None:
        """FIFO update in batch order: for each object i, drop the oldest entry of its category, append ``pooled[i]``.

        Vectorised with the same result as the sequential rule: per category c with n_c objects in the batch,
        the new list is the last Q entries of ``old_list + [pooled of those objects in batch order]``. No host
        synchronisation. Under DDP pass the all-gathered ``categories`` and ``pooled`` of every rank in the
        global batch order, so every rank applies the same update.

        Args:
            categories: (B,) or (B, 1) integer category in [0, C), any device.
            pooled: (B, D) float, the mean over keypoints of the front-door output (no gradient is kept).
        """
        categories = categories.reshape(-1).to(self.features.device, torch.long)
        pooled = pooled.detach().to(self.features.device, self.features.dtype)
        if pooled.shape != (categories.shape[0], self.features.shape[2]):
            raise ValueError(
                f"pooled has shape {tuple(pooled.shape)}; expected ({categories.shape[0]}, {self.features.shape[2]})"
            )
        num_categories, length, _ = self.features.shape
        one_hot = categories.unsqueeze(1) == torch.arange(num_categories, device=categories.device)
        counts = one_hot.sum(dim=0)  # n_c
        # rank of object i among the batch objects of its category, 0-based in batch order
        rank = (one_hot.cumsum(dim=0) - 1).gather(1, categories.unsqueeze(1)).squeeze(1)
        # old entry q moves to q - n_c (dropped when negative): new slot p takes old entry p + n_c
        source = torch.arange(length, device=counts.device).unsqueeze(0) + counts.unsqueeze(1)
        shifted = self.features.gather(1, source.clamp(max=length - 1).unsqueeze(2).expand_as(self.features))
        # Slots p >= Q - n_c (whose source fell off the end) are all rewritten below. An extra trash slot at
        # index Q absorbs objects that later objects of the same category push out again within this batch.
        updated = torch.cat([shifted, shifted.new_zeros(num_categories, 1, shifted.shape[2])], dim=1)
        slot = length + rank - counts[categories]
        slot = torch.where(slot >= 0, slot, length)
        updated.index_put_((categories, slot), pooled)
        self.features.copy_(updated[:, :length])
