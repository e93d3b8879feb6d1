"""Training: the loop is "fetch batch, loss, backward, step"; everything else is a hook.

One step consumes one global batch (see `cleanpose.engine.batching`): every rank runs its
``micro_batches`` shards (forward, loss, backward; gradients averaged over all shards of all ranks),
then every rank pushes the all-gathered pooled keypoint features of every shard, in shard order, into
its confounder queue, so the queues stay identical on all ranks (and equal to a one-process run with
as many micro-batches), then the optimiser and the learning-rate schedule step. Losses are read back
to the host only on logging steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cleanpose.config import TrainConfig, save_config
from cleanpose.data.build import build_training_datasets
from cleanpose.data.collate import concat_batches
from cleanpose.engine import distributed
from cleanpose.engine.batching import ShardedBatchSampler, queue_random_state, step_generator
from cleanpose.engine.checkpoint import load_training_state
from cleanpose.engine.graphed_step import build_graphed_step
from cleanpose.engine.hooks import HookBase, call_hooks, default_hooks, training_hooks
from cleanpose.engine.queue_extraction import read_queue_file
from cleanpose.errors import ConfigError
from cleanpose.fileio import ensure_writable_folder
from cleanpose.models.distillation import build_teacher
from cleanpose.models.losses import CleanPoseLoss, split_batch_loss
from cleanpose.models.net import CleanPoseNet, build_model

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


@dataclass
class StepResult:
    """What one step leaves for the hooks: loss terms on the device (mean over every shard)."""

    step: int
    epoch: int
    losses: dict[str, torch.Tensor]
    objects: int


class Trainer:
    """Runs the steps of a training run and calls its hooks (detectron2's ``SimpleTrainer`` split).

    Args:
        config: the run's config.
        model: the network, already on its device (wrapped in DDP when distributed).
        loss: the loss module.
        optimizer, scheduler: Adam and CyclicLR.
        datasets: one training dataset per source, in batch order.
        device: where the model lives.
        hooks: called before/after training, each step and each epoch.
    """

    def __init__(self, config, model, loss, optimizer, scheduler, datasets, device, hooks: Sequence[HookBase] = ()):
        self.config = config
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.datasets = datasets
        self.device = device
        self.hooks = list(hooks)
        self.step = 0
        self.world_size = distributed.get_world_size()
        self.rank = distributed.get_rank()
        self.micro_batches = config.run.micro_batches
        self.num_shards = self.world_size * self.micro_batches
        self.steps_per_epoch = config.run.iterations_per_epoch or min(
            len(dataset) // size for dataset, size in zip(datasets, config.data.batch_sizes)
        )
        self.max_steps = config.run.epochs * self.steps_per_epoch
        for hook in self.hooks:
            hook.trainer = self
        self.graphed = build_graphed_step(self)

    @property
    def network(self) -> CleanPoseNet:
        """The bare network (without the DDP wrapper)."""
        return getattr(self.model, "module", self.model)

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def state_dict(self) -> dict:
        return {"step": self.step, "hooks": self.hook_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        for hook in self.hooks:
            if type(hook).__name__ in state.get("hooks", {}):
                hook.load_state_dict(state["hooks"][type(hook).__name__])

    def hook_state(self) -> dict:
        """``{hook class name: state}`` of the hooks that keep state (saved in every checkpoint)."""
        return {type(hook).__name__: hook.state_dict() for hook in self.hooks if hook.state_dict()}

    def _loaders(self, epoch: int, start_step: int) -> list[Iterator]:
        loaders = []
        for dataset, batch_size in zip(self.datasets, self.config.data.batch_sizes):
            shards = [
                ShardedBatchSampler(
                    len(dataset),
                    batch_size,
                    self.steps_per_epoch,
                    seed=self.config.run.seed,
                    epoch=epoch,
                    stream=dataset.stream,
                    shard=self.rank * self.micro_batches + m,
                    num_shards=self.num_shards,
                    start_step=start_step,
                )
                for m in range(self.micro_batches)
            ]
            sampler = _InterleavedSampler(shards)
            loaders.append(
                iter(
                    DataLoader(
                        dataset,
                        batch_sampler=sampler,
                        num_workers=self.config.data.workers,
                        pin_memory=self.device.type == "cuda",
                        persistent_workers=False,
                    )
                )
            )
        return loaders

    def train(self) -> None:
        """Run from the current step to the end of the schedule; ``after_train`` hooks run even after an error."""
        with training_hooks(self.hooks):
            self._run_schedule()

    def _run_schedule(self) -> None:
        while self.step < self.max_steps:
            epoch, start = self.epoch, self.step % self.steps_per_epoch
            for dataset in self.datasets:
                dataset.set_epoch(epoch)
            self._call("before_epoch")
            loaders = self._loaders(epoch, start)
            for _ in range(start, self.steps_per_epoch):
                shards = [[next(loader) for loader in loaders] for _ in range(self.micro_batches)]
                result = self.run_step(shards)
                self.step += 1
                self._call("after_step", result)
            self._call("after_epoch")

    def run_step(self, shards: list[list[dict]]) -> StepResult:
        """Forward, loss and backward for each of this rank's shards, queue update, optimiser step.

        With a :class:`~cleanpose.engine.graphed_step.GraphedTrainStep` (``run.cuda_graph``) everything before
        the optimiser step is replayed from a CUDA graph (same arithmetic, same draws).
        """
        epoch, step = self.epoch, self.step
        self.model.train()
        if self.graphed is not None:
            totals = self.graphed(shards[0], epoch, step)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            totals = self.forward_backward(shards, epoch, step)
        self.optimizer.step()
        self.scheduler.step()
        objects = sum(part["pts"].shape[0] for parts in shards for part in parts) * self.world_size
        return StepResult(step=step, epoch=epoch, losses=totals, objects=objects)

    def forward_backward(self, shards: list[list[dict]], epoch: int, step: int) -> dict[str, torch.Tensor]:
        """Accumulate the gradients of this rank's shards and push the gathered pooled features into the queue.

        Returns:
            The loss terms, mean over the shards, on the device.
        """
        categories, pooled, totals = [], [], {}
        for m, parts in enumerate(shards):
            shard = self.rank * self.micro_batches + m
            # Upload each (pinned) part, then concatenate on the device: a host-side cat would be pageable.
            parts = [{key: value.to(self.device, non_blocking=True) for key, value in part.items()} for part in parts]
            sync = contextlib.nullcontext() if m == len(shards) - 1 or self.world_size == 1 else self.model.no_sync()
            with sync:
                losses, outputs, batch = self.shard_backward(
                    parts,
                    len(shards),
                    generator=step_generator(self.config.run.seed, epoch, step, shard, self.device),
                    queue_random_state=queue_random_state(self.config.run.seed, epoch, step, shard),
                )
            for key, value in losses.items():
                totals[key] = totals.get(key, 0) + value.detach() / len(shards)
            if "pooled_kpt_feature" in outputs:
                categories.append(batch["category_label"].reshape(-1))
                pooled.append(outputs["pooled_kpt_feature"].detach())
        if pooled:
            self.network.queue.push(
                distributed.all_gather_concat(torch.cat(categories)), distributed.all_gather_concat(torch.cat(pooled))
            )
        return totals

    def shard_backward(
        self,
        parts: list[dict[str, torch.Tensor]],
        num_shards: int,
        *,
        generator: torch.Generator,
        queue_random_state: np.random.RandomState | None = None,
        queue_idx: torch.Tensor | None = None,
        autocast_cache: bool = True,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward, loss and backward (of ``loss / num_shards``) of one shard, without touching the queue.

        Args:
            parts: the shard's part of each source, on the device (concatenated in order).
            num_shards: shards of this rank's step (the loss is divided by it).
            generator: the shard's in-model draws (augmentation, dropout, DropPath).
            queue_random_state, queue_idx: the queue draw (:meth:`CleanPoseNet.forward`).
            autocast_cache: autocast's weight-cast cache (off inside a CUDA-graph capture; same values).

        Returns:
            ``(losses, outputs, batch)``: the loss terms, the float outputs and the concatenated batch.
        """
        batch = concat_batches(parts) if len(parts) > 1 else parts[0]
        with _autocast(self.device, self.config.run.precision, autocast_cache):
            outputs = self.model(
                batch,
                queue_idx,
                generator=generator,
                queue_random_state=queue_random_state,
                update_queue=False,
            )
        outputs = {key: value.float() if value.is_floating_point() else value for key, value in outputs.items()}
        if len(parts) > 1:
            losses = split_batch_loss(self.loss, outputs, batch, parts[0]["pts"].shape[0])
        else:
            losses = self.loss(outputs, batch)
        (losses["total"] / num_shards).backward()
        return losses, outputs, batch

    def _call(self, name: str, *args) -> None:
        call_hooks(self.hooks, name, *args)


class _InterleavedSampler(torch.utils.data.Sampler):
    """Yields the batches of several shard samplers round-robin (micro-batch 0, 1, … of each step)."""

    def __init__(self, samplers: Sequence[ShardedBatchSampler]):
        self.samplers = list(samplers)

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.samplers)

    def __iter__(self):
        for batches in zip(*self.samplers):
            yield from batches


def _autocast(device: torch.device, precision: str, cache: bool = True):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def build_optimizer(model: torch.nn.Module, config: TrainConfig):
    """Adam over the trainable parameters and the reference's triangular CyclicLR (stepped every iteration)."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    fused = config.optim.fused and all(parameter.is_cuda for parameter in parameters)
    optimizer = torch.optim.Adam(
        parameters, lr=config.optim.base_lr, weight_decay=config.optim.weight_decay, fused=fused or None
    )
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=config.optim.base_lr,
        max_lr=config.optim.max_lr,
        step_size_up=config.optim.step_size,
        step_size_down=config.optim.step_size,
        mode="triangular",
        cycle_momentum=False,
    )
    return optimizer, scheduler


def distillation_active(config: TrainConfig) -> bool:
    """Distillation runs only with ``model.use_distillation`` and a teacher (not ``none``)."""
    return config.model.use_distillation and config.model.distillation.teacher != "none"


def build_loss(config: TrainConfig) -> CleanPoseLoss:
    """The loss; its distillation term is dropped (weight 0) when distillation is not active."""
    loss = config.loss
    if not distillation_active(config):
        loss = dataclasses.replace(loss, distillation_weight=0.0)
    return CleanPoseLoss.from_config(loss)


def prepare_model(config: TrainConfig, device: torch.device) -> CleanPoseNet:
    """Build the network, fill its queue from ``run.initial_queue`` and attach the teacher.

    The initial weights (and a teacher's without checkpoint) depend only on ``run.seed``. Modules an ablation
    switches off (front door, distillation head) are frozen, so the optimiser skips them and DDP does not wait
    for their gradients.
    """
    with torch.random.fork_rng(devices=[]):  # the modules' default init draws from the global generator
        torch.manual_seed(config.run.seed)
        model = build_model(config.model)
        # a teacher without checkpoint keeps its random initial weights: seeded as well
        teacher = build_teacher(config.model.distillation) if distillation_active(config) else None
    if config.model.use_front_door:
        if config.run.initial_queue is None:
            raise ConfigError(
                "run.initial_queue is not set: write one with 'cleanpose queue --config C --out queue.pt'"
            )
        model.queue.fill(read_queue_file(config.run.initial_queue, model.queue.features.shape))
    else:
        model.front_door.requires_grad_(False)
    if teacher is not None:
        model.attach_teacher(teacher)
    else:
        model.distillation_head.requires_grad_(False)
    return model.to(device)


def train(config: TrainConfig, *, resume: bool = False, quiet: bool = False) -> Path:
    """Train a network as ``config`` says; returns the path of the final checkpoint.

    Args:
        config: the whole run config (saved as ``run.out_dir/config.yaml``).
        resume: continue from ``run.out_dir/checkpoints/last.pt`` (same schedule, same draws).
        quiet: no progress bar.

    Raises:
        ConfigError: inconsistent settings (batch sizes that do not shard, too few samples, no queue).
        OutputError: the output folder is not writable or its disk is nearly full.
    """
    device = distributed.init_from_environment(resolve_device(config.run.device).type)
    out_dir = Path(config.run.out_dir)
    checkpoint_path = out_dir / "checkpoints" / CHECKPOINT_NAME
    if distributed.is_main_process():
        ensure_writable_folder(out_dir / "checkpoints", min_free_bytes=512 * 2**20)
        if not resume and checkpoint_path.exists():
            raise ConfigError(
                f"{checkpoint_path} exists: pass --resume to continue that run, or choose another run.out_dir"
            )
        save_config(config, out_dir / "config.yaml")
    model = prepare_model(config, device)
    optimizer, scheduler = build_optimizer(model, config)
    wrapped = model
    if distributed.is_distributed():
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    trainer = Trainer(
        config,
        wrapped,
        build_loss(config).to(device),
        optimizer,
        scheduler,
        build_training_datasets(config),
        device,
        default_hooks(config, checkpoint_path, quiet=quiet),
    )
    if resume:
        if not checkpoint_path.exists():
            raise ConfigError(f"--resume: no checkpoint at {checkpoint_path}")
        trainer.load_state_dict(load_training_state(checkpoint_path, model, optimizer, scheduler))
        logger.info("resumed %s at step %d", checkpoint_path, trainer.step)
    trainer.train()
    distributed.barrier()
    return checkpoint_path
