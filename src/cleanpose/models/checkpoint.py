"""The network checkpoint: the file ``cleanpose convert-checkpoint`` and training write, and
:func:`load_checkpoint` reads (docs/model.md §16b).

A checkpoint is a ``torch.save`` dict readable with ``weights_only=True``:

* ``format_version``: :data:`CHECKPOINT_FORMAT_VERSION`;
* ``config``: the resolved :class:`~cleanpose.config.ModelConfig` as a plain dict (with its config
  ``version``; a file of an older config version is upgraded on reading, see ``cleanpose.config``);
* ``model``: the network's state dict without the queue buffers;
* ``queue``: (C, Q, D) float32, the confounder queue, or None when the network never had one;
* any further entries the writer adds (training adds its optimiser, schedule, step, RNG scheme and run
  config: ``cleanpose.engine.checkpoint``). This module neither needs nor reads them.

The distillation teacher is never saved: its weights come from the official ULIP file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cleanpose.config import ModelConfig, config_from_dict, config_to_dict
from cleanpose.errors import CheckpointError, ConfigError
from cleanpose.fileio import atomic_writer
from cleanpose.models.net import CleanPoseNet, resolve_model_config
from cleanpose.models.state import load_file, load_state_strict

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "checkpoint_config",
    "load_checkpoint",
    "load_model_state",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the checkpoint dict this build writes and reads."""

_ENTRIES = ("format_version", "config", "model", "queue")
"""The entries this module writes; other entries belong to the writer."""


def save_checkpoint(model: CleanPoseNet, path: str | Path, **extra: Any) -> None:
    """Atomically write the network's checkpoint (see the module docstring).

    Args:
        model: the network (its teacher, if any, is left out).
        path: the file to write.
        **extra: further entries stored beside the network's (values ``torch.load(weights_only=True)`` can
            read: tensors, numbers, strings, and lists and dicts of them).

    Raises:
        ValueError: an ``extra`` entry named like one of the network's entries.
    """
    clashing = sorted(set(extra) & set(_ENTRIES))
    if clashing:
        raise ValueError(f"save_checkpoint: extra entries {clashing} would replace the network's entries")
    state = {key: value.detach().cpu() for key, value in model.state_dict().items() if not key.startswith("queue.")}
    queue = model.queue.features.detach().cpu().clone() if model.queue.is_filled else None
    checkpoint = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": config_to_dict(model.config),
        "model": state,
        "queue": queue,
        **extra,
    }
    with atomic_writer(Path(path)) as handle:
        torch.save(checkpoint, handle)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint dict without building the network.

    Raises:
        CheckpointError: missing or unreadable file, another format version, missing entries.
    """
    checkpoint = load_file(
        path, "checkpoint", hint="a reference state_dict must first go through 'cleanpose convert-checkpoint'"
    )
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a cleanpose checkpoint (no 'format_version'); convert reference checkpoints with "
            "'cleanpose convert-checkpoint'"
        )
    if checkpoint["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {checkpoint['format_version']}; this cleanpose reads "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    missing = [key for key in _ENTRIES if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return checkpoint


def checkpoint_config(checkpoint: Mapping[str, Any], path: str | Path) -> ModelConfig:
    """The network config stored in a checkpoint read by :func:`read_checkpoint` (older versions upgraded).

    Raises:
        CheckpointError: the stored config is not a valid :class:`ModelConfig` (the message says why).
    """
    try:
        return config_from_dict(checkpoint["config"], ModelConfig, source=f"{path} [config]")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def load_checkpoint(path: str | Path) -> CleanPoseNet:
    """Build the network a checkpoint describes and load its weights and queue (strict).

    Args:
        path: a cleanpose checkpoint (:func:`save_checkpoint`, training, or ``cleanpose convert-checkpoint``).

    Returns:
        The network on the CPU, in eval mode. Without a stored queue its forward raises
        :class:`CheckpointError` saying the queue is missing.

    Raises:
        CheckpointError: unreadable file, bad config, missing or unexpected keys (listed), shape mismatches,
            or a queue of the wrong shape.
    """
    checkpoint = read_checkpoint(path)
    queue = checkpoint["queue"]
    config = checkpoint_config(checkpoint, path)
    if queue is not None and queue.dim() == 3 and queue.shape[1] != config.front_door.queue_length:
        config = resolve_model_config(config, queue.shape[1])
    model = CleanPoseNet(config, load_rgb_weights=False)
    load_model_state(model, checkpoint["model"], queue, source=str(path))
    return model.eval()


def load_model_state(
    model: CleanPoseNet, state: Mapping[str, torch.Tensor], queue: torch.Tensor | None, *, source: str
) -> None:
    """Load a state dict (without queue keys) and a queue into ``model``, strictly.

    Raises:
        CheckpointError: missing or unexpected keys (listed), shape mismatches, wrong queue shape.
    """
    expected = {key: value for key, value in model.state_dict().items() if not key.startswith("queue.")}
    load_state_strict(state, expected, source)
    model.load_state_dict({**state, **{f"queue.{key}": value for key, value in model.queue.state_dict().items()}})
    if queue is not None:
        try:
            model.queue.fill(queue.to(torch.float32))
        except ValueError as error:
            raise CheckpointError(f"{source}: {error}") from None
