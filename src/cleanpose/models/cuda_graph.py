"""CUDA-graph replay of the eval-mode CleanPose forward, one graph per input shape (issue 17: inference latency).

The eval forward of a small frame is bound by the host: it launches a few thousand small kernels, so 1 and
5 objects take about the same time. A CUDA graph records those launches once and replays them as one. It
needs fixed shapes and fixed memory, so :class:`GraphedEvalForward` keeps, per :class:`GraphKey` (object
count B, point count N, crop size H × W, precision, queue-draw layout), static input buffers, the graph
recorded on them and its static outputs. A call copies the inputs into the buffers, replays the graph and
returns the outputs: the same tensors as ``model(batch, queue_idx=queue_idx)`` under
``torch.inference_mode()`` (and the same autocast), bit for bit, since the graph runs the eager forward's
kernels in the same order on the same data.

What a graph cannot hold, and how the forward avoids it:

* the confounder-queue draw is random on the host: the caller passes ``queue_idx`` (or a
  ``queue_random_state``, drawn here with :meth:`~cleanpose.models.front_door.ConfounderQueue.sample_indices`
  exactly as the eager forward draws), which is checked on the host and copied into a static int64 buffer;
  the forward runs inside :meth:`~cleanpose.models.front_door.ConfounderQueue.trusted_indices`, so it reads
  no index back to the host;
* no host synchronisation or upload of a fresh CPU tensor anywhere in the forward (the point ops use their
  Triton kernels on CUDA float32 clouds; without Triton their PyTorch references upload constants and
  cannot be captured);
* autocast's weight-cast cache is off during capture (a cached cast from outside the graph would be freed
  under it); the casts are recomputed inside the graph, with the same values.

CUDA only: building one around a model that is not on a CUDA device raises
:class:`~cleanpose.errors.BackendUnavailableError`; callers on the CPU run the model itself.

Usage::

    graphed = GraphedEvalForward(model.eval())           # model on a CUDA device
    outputs = graphed(batch, queue_idx)                  # first call per shape: warm-up + capture (slow)
    rotation = outputs["pred_rotation"].clone()          # the next call overwrites every output tensor
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from cleanpose.errors import BackendUnavailableError, ConfigError
from cleanpose.models.net import CleanPoseNet, _unpack

__all__ = ["PRECISIONS", "GraphKey", "GraphedEvalForward", "copy_to_static", "graph_key"]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Autocast dtype of each precision name (None: no autocast)."""

_INPUT_DTYPES = {"rgb": torch.float32, "pts": torch.float32, "choose": torch.int64, "category_label": torch.int64}
"""The batch keys the forward reads and the dtypes of their static buffers."""


class GraphKey(NamedTuple):
    """The shape of one captured forward; every call with the same key replays the same graph."""

    batch_size: int
    """B, objects."""
    num_points: int
    """N, points per object."""
    height: int
    """H of the RGB crop, pixels."""
    width: int
    """W of the RGB crop, pixels."""
    precision: str
    """A key of :data:`PRECISIONS`."""
    queue_idx_dims: int
    """2 for one (C, S) queue draw, 3 for one per object (B, C, S), 0 without the front door."""


def graph_key(batch: Mapping[str, torch.Tensor], queue_idx: torch.Tensor | None, precision: str) -> GraphKey:
    """The :class:`GraphKey` of a call, after checking what the static buffers need.

    Args:
        batch: ``rgb`` (B, 3, H, W) float32, ``pts`` (B, N, 3) float32, ``choose`` (B, N) integer,
            ``category_label`` (B,) or (B, 1) integer (as :meth:`CleanPoseNet.forward`).
        queue_idx: (C, S) or (B, C, S) integer, or None (no front door).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ConfigError: an unknown precision.
        ValueError: missing keys or inconsistent shapes (as the forward, per-object draws included), float
            inputs that are not float32 or index inputs that are not integer (the static buffers are float32
            and int64).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"GraphedEvalForward: precision {precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    rgb, points, choose, categories = _unpack(batch)
    for name, tensor in (("rgb", rgb), ("pts", points)):
        if tensor.dtype != torch.float32:
            raise ValueError(f"GraphedEvalForward: {name} has dtype {tensor.dtype}; expected torch.float32")
    for name, tensor in (("choose", choose), ("category_label", categories)):
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise ValueError(f"GraphedEvalForward: {name} has dtype {tensor.dtype}; expected an integer dtype")
    batch_size, num_points, _ = points.shape
    if queue_idx is not None and queue_idx.dim() == 3 and queue_idx.shape[0] != batch_size:
        raise ValueError(f"queue_idx holds {queue_idx.shape[0]} per-object draws; the batch has {batch_size}")
    dims = 0 if queue_idx is None else queue_idx.dim()
    return GraphKey(batch_size, num_points, rgb.shape[2], rgb.shape[3], precision, dims)


@dataclass
class _Captured:
    """One recorded forward: its graph, the static buffers it reads and the static outputs it writes."""

    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    queue_idx: torch.Tensor | None
    outputs: dict[str, torch.Tensor]


class GraphedEvalForward:
    """Replays the eval-mode forward of a CUDA :class:`CleanPoseNet` from one CUDA graph per :class:`GraphKey`.

    The first call with a new key warms the forward up on a side stream (``warmup`` eager forwards: lazy
    initialisation, Triton compilation, cuBLAS/cuDNN handles) and records it; every call then copies its
    inputs into that key's static buffers and replays. Each graph keeps its own memory pool (its
    activations and outputs) until :meth:`reset`.

    The graphs read the model's parameters and buffers (and the queue) where they live: changing them in
    place (``load_state_dict``, ``queue.fill``) is seen by the next replay; moving or replacing them
    (``model.to(...)``, a new parameter) is not: call :meth:`reset` after that. The model must stay in eval
    mode.

    Args:
        model: the network, on a CUDA device, in eval mode when called.
        warmup: eager forwards before each capture.

    Raises:
        BackendUnavailableError: the model is not on a CUDA device.
    """

    def __init__(self, model: CleanPoseNet, *, warmup: int = 3):
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"GraphedEvalForward: CUDA graphs need a model on a CUDA device; this one is on {device} "
                "(run the model itself there)"
            )
        if warmup < 1:
            raise ValueError(f"GraphedEvalForward: warmup is {warmup}; expected >= 1 eager forward before capture")
        self.model = model
        self.device = device
        self.warmup = warmup
        self._captured: dict[GraphKey, _Captured] = {}

    @property
    def keys(self) -> list[GraphKey]:
        """The keys captured so far, in capture order."""
        return list(self._captured)

    def reset(self) -> None:
        """Drop every graph and its memory (after moving or replacing the model's tensors, or to free memory)."""
        self._captured.clear()

    def __call__(
        self,
        batch: Mapping[str, torch.Tensor],
        queue_idx: torch.Tensor | None = None,
        *,
        precision: str = "fp32",
        queue_random_state: np.random.RandomState | None = None,
    ) -> dict[str, torch.Tensor]:
        """The eval forward of ``batch``: ``model(batch, queue_idx=queue_idx)`` replayed from a graph.

        Args:
            batch: ``rgb``, ``pts``, ``choose``, ``category_label`` as :meth:`CleanPoseNet.forward` takes them
                (float32 and integer tensors), on any device (CPU tensors are uploaded through pinned memory).
            queue_idx: (C, S) or (B, C, S) integer queue draw (:meth:`CleanPoseNet.forward`); best on the CPU,
                where its range check needs no device synchronisation. None draws one (C, S) set with
                ``model.queue.sample_indices`` from ``queue_random_state`` (None: NumPy's global generator),
                as the eager forward does. Ignored without the front door.
            precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` for the forward under that CUDA autocast (as
                ``with torch.autocast("cuda", dtype=...)`` around the eager forward). An autocast active
                around this call is ignored.
            queue_random_state: legacy NumPy generator of the default queue draw.

        Returns:
            A new dict of the forward's outputs (keys, shapes and units of :meth:`CleanPoseNet.forward` in
            eval mode) holding this key's static output tensors (inference tensors): the next call with the
            same key overwrites them, so clone what you keep.

        Raises:
            ValueError: the model is in training mode; bad inputs (:func:`graph_key`) or a bad ``queue_idx``
                (:meth:`~cleanpose.models.front_door.ConfounderQueue.check_indices`).
            ConfigError: an unknown precision.
            CheckpointError: the queue was never filled (at the first capture).
        """
        if self.model.training:
            raise ValueError("GraphedEvalForward: the model is in training mode; call model.eval() first")
        queue_idx = self._queue_draw(queue_idx, queue_random_state)
        key = graph_key(batch, queue_idx, precision)
        inputs = {name: batch[name] for name in _INPUT_DTYPES}
        with torch.inference_mode(), torch.cuda.device(self.device):
            captured = self._captured.get(key)
            if captured is None:
                captured = self._capture(key, inputs, queue_idx)
            else:
                self._copy_in(captured, inputs, queue_idx)
            captured.graph.replay()
        return dict(captured.outputs)

    def _queue_draw(
        self, queue_idx: torch.Tensor | None, random_state: np.random.RandomState | None
    ) -> torch.Tensor | None:
        """The checked int64 queue draw of a call (drawn on the host when not given), or None without front door."""
        config = self.model.config
        if not config.use_front_door:
            return None
        num_samples = config.front_door.num_queue_samples
        if queue_idx is None:
            return self.model.queue.sample_indices(num_samples, random_state)
        return self.model.queue.check_indices(queue_idx, num_samples)

    def _copy_in(self, captured: _Captured, inputs: dict[str, torch.Tensor], queue_idx: torch.Tensor | None) -> None:
        """Copy a call's tensors into the static buffers, stream-ordered (CPU tensors through pinned memory)."""
        pairs = [(captured.inputs[name], value) for name, value in inputs.items()]
        if queue_idx is not None:
            pairs.append((captured.queue_idx, queue_idx))
        for static, value in pairs:
            copy_to_static(static, value.reshape(static.shape).to(static.dtype))

    def _capture(self, key: GraphKey, inputs: dict[str, torch.Tensor], queue_idx: torch.Tensor | None) -> _Captured:
        """Allocate the static buffers of ``key``, fill them with this call's inputs, warm up and record."""
        shapes = {
            "rgb": (key.batch_size, 3, key.height, key.width),
            "pts": (key.batch_size, key.num_points, 3),
            "choose": (key.batch_size, key.num_points),
            "category_label": (key.batch_size,),
        }
        static = {
            name: torch.empty(shape, dtype=_INPUT_DTYPES[name], device=self.device) for name, shape in shapes.items()
        }
        static_idx = None if queue_idx is None else torch.empty(queue_idx.shape, dtype=torch.int64, device=self.device)
        graph = torch.cuda.CUDAGraph()
        captured = _Captured(graph, static, static_idx, {})
        self._copy_in(captured, inputs, queue_idx)
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with self.model.queue.trusted_indices():
            with torch.cuda.stream(stream):
                for _ in range(self.warmup):
                    with _autocast(key.precision):
                        self.model(static, queue_idx=static_idx)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            with torch.cuda.graph(graph, stream=stream), _autocast(key.precision):
                captured.outputs = self.model(static, queue_idx=static_idx)
        self._captured[key] = captured
        return captured


def copy_to_static(static: torch.Tensor, value: torch.Tensor) -> None:
    """Copy ``value`` into a graph's static device buffer, ordered on the current stream (a CPU tensor goes
    through pinned memory, so the copy does not wait for the host)."""
    if value.device.type == "cpu" and not value.is_pinned():
        value = value.pin_memory()
    static.copy_(value, non_blocking=True)


def _autocast(precision: str) -> torch.autocast:
    """The forward's CUDA autocast: off for fp32; else without its weight-cast cache (a cast cached outside the
    graph would be freed under it; inside, the casts are recomputed with the same values)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return torch.autocast("cuda", enabled=False)
    return torch.autocast("cuda", dtype=dtype, cache_enabled=False)
