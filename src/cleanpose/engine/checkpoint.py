"""Training checkpoints: the network's checkpoint plus the trainer's state, in one file.

The file is a network checkpoint (``cleanpose.models.checkpoint``: ``format_version``, ``config``,
``model``, ``queue``), so `cleanpose.models.load_checkpoint` reads any training checkpoint for testing,
with these training entries beside it, owned by this module:

* ``optimizer``: ``optimizer.state_dict()`` (Adam);
* ``scheduler``: ``scheduler.state_dict()`` (CyclicLR);
* ``step``: completed optimiser steps (int);
* ``rng``: ``{"scheme": RNG_SCHEME, "seed": run.seed}``. All draws are keyed by (seed, epoch, step,
  shard), so the step number is the whole random state and this entry only records the scheme;
* ``run_config``: the whole training config (:class:`~cleanpose.config.TrainConfig` as a plain dict);
* ``hooks``: the training hooks' state (plain values: the best validation metric so far and its step).

The file is written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cleanpose.config import TrainConfig, config_to_dict
from cleanpose.errors import CheckpointError
from cleanpose.models.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from cleanpose.models.net import CleanPoseNet

logger = logging.getLogger(__name__)

RNG_SCHEME = "keyed(seed, epoch, step, shard)"


def save_training_state(
    path: str | Path,
    model: CleanPoseNet,
    optimizer,
    scheduler,
    step: int,
    config: TrainConfig,
    hooks: dict | None = None,
) -> None:
    """Atomically write the training state after `step` completed steps (``hooks``: the hooks' state)."""
    save_checkpoint(
        model,
        path,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        step=step,
        rng={"scheme": RNG_SCHEME, "seed": config.run.seed},
        run_config=config_to_dict(config),
        hooks=hooks,
    )
    logger.info("checkpoint: %s (step %d)", path, step)


def load_training_state(path: str | Path, model: CleanPoseNet, optimizer, scheduler) -> dict:
    """Restore network, queue, optimiser and schedule in place; returns ``{"step": n, "hooks": state}``.

    ``state`` is the hooks' state the file holds (``{}`` when it holds none).

    Raises:
        CheckpointError: unreadable file, missing training entries, or keys that do not match.
    """
    checkpoint = read_checkpoint(path)
    missing = [key for key in ("optimizer", "scheduler", "step") if checkpoint.get(key) is None]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); cannot resume from it")
    load_model_state(model, checkpoint["model"], checkpoint["queue"], source=str(path))
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    return {"step": int(checkpoint["step"]), "hooks": checkpoint.get("hooks") or {}}
