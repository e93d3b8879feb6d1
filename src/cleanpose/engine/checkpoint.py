"""Training checkpoints: the network's checkpoint dict plus optimiser, schedule and step.

The file is the one `cleanpose.models.save_checkpoint` writes (``format_version``, ``config``,
``model``, ``queue``, ``optimizer``, ``scheduler``, ``step``, ``rng``, ``run_config``, ``hooks``), written
atomically, so `cleanpose.models.load_checkpoint` reads any training checkpoint for testing. All draws
are keyed by (seed, epoch, step, shard), so ``rng`` only records that scheme and the seed: the step
number is the whole random state.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cleanpose.config import TrainConfig, config_to_dict
from cleanpose.errors import CheckpointError
from cleanpose.models.net import CleanPoseNet, load_model_state, read_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

RNG_SCHEME = "keyed(seed, epoch, step, shard)"


def save_training_state(
    path: str | Path, model: CleanPoseNet, optimizer, scheduler, step: int, config: TrainConfig,
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
