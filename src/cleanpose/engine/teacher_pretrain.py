"""Offline substitute for the ULIP teacher weights: pretrain a point teacher on the synthetic shape library.

When no official ULIP checkpoint is at hand, ``cleanpose teacher pretrain`` trains the PointBERT (or
PointNet2-SSG) teacher from scratch and writes it in the official ULIP checkpoint layout, so
``distillation.teacher_checkpoint`` (and the queue's ``run.queue_teacher_checkpoint``) accept the file
unchanged through :func:`cleanpose.models.distillation.load_ulip_checkpoint`. The pieces live where their
concept does:

* data: :class:`cleanpose.data.shape_pairs.ShapePairDataset` (two augmented views of a random synthetic
  instance per sample, drawn from ``(seed, sample index)`` only);
* objective: :class:`cleanpose.models.teacher_objective.TeacherPretrainObjective` (category head + InfoNCE);
* file: :func:`cleanpose.models.distillation.save_ulip_checkpoint`, next to its loader;
* loop: :class:`TeacherPretrainer` here, "fetch batch, loss, backward, step" with the training hooks of
  :mod:`cleanpose.engine.hooks` (progress bar, ``after_train`` also after an error).

Optimisation: AdamW (weight decay 0.05), linear warm-up over the first 5 % of the steps, then cosine decay
to 0, one step per batch.

Sizes. :func:`cleanpose.models.distillation.build_teacher` always builds the reference sizes (PointBERT
384 wide, 12 blocks, 512 groups of 32, 768-d output; PointNet2-SSG 256-d), so a file meant for
``distillation.teacher_checkpoint`` must be pretrained at the default sizes; ``teacher_kwargs`` exists
for tests and experiments, whose files load into a teacher built with the same kwargs.

Randomness: initial weights, DropPath, Dropout and PointNet2-SSG's FPS start points come from one
``torch.Generator`` seeded with ``seed``; data draws are keyed by (seed, sample index), so the number of
loader workers does not change the result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cleanpose.data.shape_pairs import CATEGORY_SETS, ShapePairDataset, shape_categories
from cleanpose.engine.hooks import HookBase, ProgressHook, call_hooks, training_hooks
from cleanpose.engine.train import resolve_device
from cleanpose.errors import ConfigError, OutputError
from cleanpose.fileio import ensure_writable_folder
from cleanpose.models.distillation import save_ulip_checkpoint
from cleanpose.models.teacher_objective import (
    TEACHERS,
    TEMPERATURE,
    TeacherPretrainObjective,
    build_pretraining_teacher,
    reset_parameters,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PRETRAIN_FORMAT_VERSION",
    "TeacherPretrainResult",
    "TeacherPretrainSettings",
    "TeacherPretrainer",
    "pretrain_teacher",
    "train_teacher",
]

PRETRAIN_FORMAT_VERSION = 1
"""Version of the extra keys (``format_version``, ``train_accuracy``, ``args``) of a pretrained file."""

WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
ACCURACY_WINDOW_FRACTION = 0.1
"""The reported train accuracy is the mean over the last 10 % of the steps (at least one)."""


@dataclasses.dataclass(frozen=True)
class TeacherPretrainSettings:
    """What to pretrain and how (the flags of ``cleanpose teacher pretrain``); checked when built.

    Raises:
        ConfigError: a value is out of range (the teacher-specific point minimum is checked when the teacher
            is built).
    """

    teacher: str = "pointbert"
    """``pointbert`` or ``pointnet2_ssg``."""
    format: str = "nocs"
    """``nocs`` (6 categories) or ``housecat6d`` (10 categories): the category set."""
    instances_per_category: int | None = None
    """None for fresh shape parameters per sample, else the size of a fixed pool."""
    points: int = 1024
    """N, points per view."""
    steps: int = 2000
    """Optimisation steps."""
    batch_size: int = 32
    """B samples (2B clouds) per step."""
    lr: float = 5e-4
    """Peak AdamW learning rate."""
    seed: int = 0
    """Keys the initial weights, DropPath and every data draw."""
    workers: int = 0
    """DataLoader worker processes building the meshes (0: in this process); the result does not depend on it."""
    teacher_kwargs: Mapping | None = None
    """Constructor sizes of the teacher (tests); None keeps the reference sizes."""

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise ConfigError(f"teacher is {self.teacher!r}; valid teachers: {', '.join(TEACHERS)}")
        if self.format not in CATEGORY_SETS:
            raise ConfigError(f"format is {self.format!r}; valid formats: {', '.join(CATEGORY_SETS)}")
        if self.steps < 1:
            raise ConfigError(f"steps is {self.steps}; need at least 1 optimisation step")
        if self.batch_size < 2:
            raise ConfigError(
                f"batch_size is {self.batch_size}; the contrastive term needs at least 2 samples per batch"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr is {self.lr}; expected a positive learning rate")
        if self.instances_per_category is not None and self.instances_per_category < 1:
            raise ConfigError(f"instances_per_category is {self.instances_per_category}; expected None (fresh) or >= 1")
        if self.workers < 0:
            raise ConfigError(f"workers is {self.workers}; expected >= 0")


@dataclasses.dataclass
class TeacherPretrainResult:
    """What :func:`train_teacher` returns."""

    teacher: nn.Module
    """The trained teacher, frozen again and in eval mode, on the training device."""
    losses: list[float]
    """Total loss per step."""
    accuracies: list[float]
    """Category accuracy of the linear head per step (both views of the batch), in [0, 1]."""
    train_accuracy: float
    """Mean of ``accuracies`` over the last 10 % of the steps (at least one)."""


def _learning_rate_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 5 % of the steps, then cosine decay to 0 at ``steps``."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class TeacherPretrainer:
    """Runs the steps of teacher pretraining and calls its hooks (the protocol of :class:`Trainer`).

    Hooks see ``step`` (steps done) and ``max_steps``; ``after_step`` receives the step's detached terms
    (``classification``, ``contrastive``, ``total``, ``accuracy``: () tensors on the device).

    Args:
        objective: teacher and head, on ``device``, in train mode.
        optimizer, scheduler: stepped once per batch.
        loader: yields ``views`` (B, 2, N, 3) float32 metres and ``label`` (B,) int64; one batch per step.
        device: where the objective lives.
        generator: the teacher's DropPath / Dropout / FPS draws.
        hooks: called before/after training and after each step.
    """

    def __init__(self, objective, optimizer, scheduler, loader, device, generator, hooks=()):
        self.objective = objective
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader = loader
        self.device = device
        self.generator = generator
        self.hooks = list(hooks)
        self.step = 0
        self.max_steps = len(loader)
        for hook in self.hooks:
            hook.trainer = self

    def train(self) -> None:
        """One step per batch of the loader; ``after_train`` hooks run even after an error."""
        with training_hooks(self.hooks):
            for batch in self.loader:
                terms = self.run_step(batch)
                self.step += 1
                call_hooks(self.hooks, "after_step", terms)

    def run_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Forward, loss, backward and optimiser step of one batch; returns the detached terms."""
        views, labels = batch["views"].to(self.device), batch["label"].to(self.device)
        terms = self.objective(views, labels, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        self.scheduler.step()
        return {name: value.detach() for name, value in terms.items()}


class _RecordHook(HookBase):
    """Keeps the total loss and the accuracy of every step; logs every tenth of the run."""

    def __init__(self):
        self.losses: list[float] = []
        self.accuracies: list[float] = []

    def after_step(self, terms) -> None:
        self.losses.append(terms["total"].item())
        self.accuracies.append(float(terms["accuracy"]))
        step, steps = self.trainer.step, self.trainer.max_steps
        if step % max(1, steps // 10) == 0 or step == steps:
            logger.info(
                "step %d/%d: loss %.4f (classification %.4f, contrastive %.4f), accuracy %.3f",
                step,
                steps,
                self.losses[-1],
                terms["classification"].item(),
                terms["contrastive"].item(),
                self.accuracies[-1],
            )


def train_teacher(
    settings: TeacherPretrainSettings, *, device: str | torch.device = "cpu", progress: bool = True
) -> TeacherPretrainResult:
    """Pretrain a teacher on the synthetic shape library (module docstring); no file is written.

    Args:
        settings: the teacher, data and optimisation settings.
        device: where the teacher trains (``auto``, ``cpu``, ``cuda``, a ``torch.device``).
        progress: show a tqdm bar.

    Returns:
        :class:`TeacherPretrainResult`.

    Raises:
        ConfigError: ``points`` is below what the teacher samples, ``teacher_kwargs`` do not fit it, or
            ``device='cuda'`` without a CUDA device.
    """
    steps, batch_size, seed = settings.steps, settings.batch_size, settings.seed
    device = resolve_device(device) if isinstance(device, str) else device
    categories = shape_categories(settings.format)
    generator = torch.Generator().manual_seed(seed)
    teacher = build_pretraining_teacher(settings.teacher, settings.teacher_kwargs or {}, settings.points)
    objective = TeacherPretrainObjective(teacher, len(categories))
    reset_parameters(objective.teacher, generator)
    reset_parameters(objective.head, generator)
    objective.to(device).train()
    objective.requires_grad_(True)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=settings.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, steps))
    dataset = ShapePairDataset(categories, steps * batch_size, settings.points, seed, settings.instances_per_category)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=settings.workers,
        generator=torch.Generator().manual_seed(seed),
    )  # keeps the loader off the global RNG
    logger.info(
        "pretraining %s (%d parameters) on %d %s categories: %d steps of %d samples x 2 views of %d points",
        settings.teacher,
        sum(p.numel() for p in teacher.parameters()),
        len(categories),
        settings.format,
        steps,
        batch_size,
        settings.points,
    )
    record = _RecordHook()
    hooks = [record, ProgressHook(quiet=not progress, desc="teacher pretrain")]
    start = time.perf_counter()
    TeacherPretrainer(objective, optimizer, scheduler, loader, device, generator, hooks).train()
    window = max(1, round(ACCURACY_WINDOW_FRACTION * steps))
    train_accuracy = float(np.mean(record.accuracies[-window:]))
    seconds = time.perf_counter() - start
    logger.info(
        "pretraining done in %.1f s (%.2f s/step); train accuracy over the last %d steps: %.3f (chance %.3f)",
        seconds,
        seconds / steps,
        window,
        train_accuracy,
        1.0 / len(categories),
    )
    teacher.freeze()
    teacher.eval()
    return TeacherPretrainResult(teacher, record.losses, record.accuracies, train_accuracy)


def _check_output(out_path: Path) -> None:
    """Fail before training when the file could not be written afterwards."""
    if out_path.is_dir():
        raise OutputError(f"{out_path}: is a folder; --out names the checkpoint file to write")
    ensure_writable_folder(out_path.parent)


def pretrain_teacher(
    out_path: str | Path,
    settings: TeacherPretrainSettings,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> Path:
    """Pretrain a teacher (:func:`train_teacher`) and save it for ``distillation.teacher_checkpoint``.

    Arguments as :func:`train_teacher`. The output folder is created and checked before training starts.
    The file (:func:`~cleanpose.models.distillation.save_ulip_checkpoint`) carries, besides the weights,
    ``args`` (every setting but ``workers``, which does not change the result, plus the categories, weight
    decay and temperature), ``train_accuracy`` and ``format_version`` (:data:`PRETRAIN_FORMAT_VERSION`).

    Returns:
        ``out_path`` as a Path.

    Raises:
        ConfigError: ``points`` does not fit the teacher, or ``device='cuda'`` without a CUDA device.
        OutputError: ``out_path`` is a folder, or its folder cannot be written.
    """
    out_path = Path(out_path)
    _check_output(out_path)
    result = train_teacher(settings, device=device, progress=progress)
    args = {
        field.name: getattr(settings, field.name) for field in dataclasses.fields(settings) if field.name != "workers"
    }
    args.update(
        source="cleanpose teacher pretrain",
        teacher_kwargs=dict(settings.teacher_kwargs or {}),
        categories=shape_categories(settings.format),
        weight_decay=WEIGHT_DECAY,
        temperature=TEMPERATURE,
    )
    save_ulip_checkpoint(
        out_path,
        result.teacher,
        args=args,
        train_accuracy=float(result.train_accuracy),
        format_version=PRETRAIN_FORMAT_VERSION,
    )
    logger.info("wrote the pretrained %s teacher to %s", settings.teacher, out_path)
    return out_path
