"""CUDA-graph replay of a training step's forward, loss, backward and queue push (issue 17: step time).

A training step launches thousands of small kernels; in bf16 the host's launching, not the GPU, sets the
pace. :class:`GraphedTrainStep` records one step's forward, loss, backward and confounder-queue push once
and replays that record every step. The optimiser and the learning-rate schedule stay eager (the fused Adam
is a few launches, issued while the GPU still runs the graph), so the optimiser, its state and the
checkpoints are exactly those of an eager run.

A replay computes what the eager step computes, with the same draws:

* the batch is copied into static device buffers (one per key of each source's part);
* the in-model draws (augmentation, dropout, DropPath) come from one CUDA generator registered with the
  graph and re-seeded before each replay with the eager step's seed (:func:`~cleanpose.engine.batching.step_seed`),
  so they are the numbers the eager step's fresh generator gives;
* the confounder-queue draw is made on the host from the step's legacy ``RandomState``
  (:func:`~cleanpose.engine.batching.queue_random_state`), as the eager forward draws it, checked there and
  copied into a static index buffer;
* the gradients live in the graph's memory: the captured backward writes them, every replay overwrites them
  (no ``zero_grad`` between steps);
* autocast's weight-cast cache is off in the graph (the casts are recomputed, with the same values).

The first ``warmup`` steps run eagerly on the capture stream (lazy initialisation, Triton compilation,
cuBLAS workspaces); the next step is recorded and replayed, and every later one replayed. It serves one
CUDA process with one micro-batch per step: :func:`build_graphed_step` says why it is not used otherwise.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from cleanpose.engine.batching import queue_random_state, step_seed
from cleanpose.models.cuda_graph import copy_to_static

if TYPE_CHECKING:
    from cleanpose.engine.train import Trainer

logger = logging.getLogger(__name__)

__all__ = ["GraphedTrainStep", "build_graphed_step", "graph_unavailable_reason"]


def graph_unavailable_reason(trainer: Trainer) -> str | None:
    """Why ``run.cuda_graph`` cannot serve this trainer, or None when it can."""
    if trainer.device.type != "cuda":
        return f"the device is {trainer.device.type}, not CUDA"
    if trainer.world_size > 1:
        return f"the run is distributed over {trainer.world_size} processes"
    if trainer.micro_batches > 1:
        return f"run.micro_batches is {trainer.micro_batches}"
    return None


def build_graphed_step(trainer: Trainer) -> GraphedTrainStep | None:
    """The trainer's graphed step when ``run.cuda_graph`` is on and can serve it, else None (with a warning
    when it is on: the run then steps eagerly, with the same results)."""
    if not trainer.config.run.cuda_graph:
        return None
    reason = graph_unavailable_reason(trainer)
    if reason is not None:
        logger.warning("run.cuda_graph is on but %s: training steps run eagerly", reason)
        return None
    return GraphedTrainStep(trainer)


class GraphedTrainStep:
    """Runs :meth:`Trainer.forward_backward` of one-shard steps from a CUDA graph.

    Args:
        trainer: a trainer on one CUDA device with one micro-batch (:func:`graph_unavailable_reason`).
        warmup: eager steps before the capture (at least 1).

    Raises:
        ValueError: a trainer the graph cannot serve, or ``warmup < 1``.
    """

    def __init__(self, trainer: Trainer, *, warmup: int = 2):
        reason = graph_unavailable_reason(trainer)
        if reason is not None:
            raise ValueError(f"GraphedTrainStep: {reason}")
        if warmup < 1:
            raise ValueError(f"GraphedTrainStep: warmup is {warmup}; expected >= 1 eager step before capture")
        self.trainer = trainer
        self.warmup = warmup
        self.device = trainer.device
        self.stream = torch.cuda.Stream(device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0
        self._parts: list[dict[str, torch.Tensor]] = []
        self._queue_idx: torch.Tensor | None = None
        self._totals: dict[str, torch.Tensor] = {}

    def __call__(self, parts: list[dict[str, torch.Tensor]], epoch: int, step: int) -> dict[str, torch.Tensor]:
        """Gradients, queue push and loss terms of one step (one shard): eager while warming up, then replayed.

        Args:
            parts: each source's part of the batch (CPU, pinned by the loader, or device tensors); the same
                keys, shapes and dtypes every step.
            epoch, step: the step's place in the schedule (they key its draws).

        Returns:
            The loss terms on the device (fresh tensors, not overwritten by the next step).

        Raises:
            ValueError: parts whose keys, shapes or dtypes differ from the recorded step's.
        """
        queue_idx = self._queue_draw(epoch, step)
        if not self._parts:
            self._allocate(parts, queue_idx)
        self._copy_in(parts, queue_idx)
        if self.graph is None and self.eager_steps >= self.warmup:
            self._on_side_stream(self._capture)
        self.generator.manual_seed(step_seed(self.trainer.config.run.seed, epoch, step, 0))
        if self.graph is None:
            self.eager_steps += 1
            return self._on_side_stream(self._eager)
        self.graph.replay()
        return {key: value.clone() for key, value in self._totals.items()}

    def _on_side_stream(self, work):
        """``work()`` on the capture stream, ordered after and before the current stream's work."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            result = work()
        current.wait_stream(self.stream)
        return result

    def _eager(self) -> dict[str, torch.Tensor]:
        self.trainer.optimizer.zero_grad(set_to_none=True)
        return self._body()

    def _queue_draw(self, epoch: int, step: int) -> torch.Tensor | None:
        """The step's (C, S) queue draw on the host, as the eager forward makes it; None without the front door."""
        network = self.trainer.network
        if not network.config.use_front_door:
            return None
        random_state = queue_random_state(self.trainer.config.run.seed, epoch, step, 0)
        return network.queue.sample_indices(network.config.front_door.num_queue_samples, random_state)

    def _allocate(self, parts: list[dict[str, torch.Tensor]], queue_idx: torch.Tensor | None) -> None:
        self._parts = [
            {key: torch.empty(value.shape, dtype=value.dtype, device=self.device) for key, value in part.items()}
            for part in parts
        ]
        if queue_idx is not None:
            self._queue_idx = torch.empty(queue_idx.shape, dtype=torch.int64, device=self.device)

    def _copy_in(self, parts: list[dict[str, torch.Tensor]], queue_idx: torch.Tensor | None) -> None:
        """Copy a step's inputs into the static buffers (stream-ordered; pinned CPU tensors copy asynchronously)."""
        layout = [{key: (tuple(v.shape), v.dtype) for key, v in part.items()} for part in self._parts]
        given = [{key: (tuple(v.shape), v.dtype) for key, v in part.items()} for part in parts]
        if given != layout:
            raise ValueError(
                f"GraphedTrainStep: this step's batch {given} differs from the recorded layout {layout}; a CUDA "
                "graph replays fixed shapes (the loader drops the last incomplete batch)"
            )
        for static, part in zip(self._parts, parts):
            for key, value in part.items():
                copy_to_static(static[key], value)
        if queue_idx is not None:
            copy_to_static(self._queue_idx, queue_idx)

    def _body(self) -> dict[str, torch.Tensor]:
        """Forward, loss, backward and queue push on the static buffers (what the graph records)."""
        network = self.trainer.network
        with network.queue.trusted_indices():
            losses, outputs, batch = self.trainer.shard_backward(
                self._parts, 1, generator=self.generator, queue_idx=self._queue_idx, autocast_cache=False
            )
        if "pooled_kpt_feature" in outputs:
            network.queue.push(batch["category_label"].reshape(-1), outputs["pooled_kpt_feature"].detach())
        return {key: value.detach() for key, value in losses.items()}

    def _capture(self) -> None:
        """Record :meth:`_body` (the gradients are allocated inside the graph's memory)."""
        self.trainer.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)
        # thread_local: the DataLoader's pin-memory thread keeps allocating pinned memory during the capture
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            self._totals = self._body()
        self.graph = graph
        logger.info("training step recorded as a CUDA graph after %d eager steps", self.eager_steps)
