"""Offline substitute for the ULIP teacher weights: pretrain a point teacher on the synthetic shape library.

When no official ULIP checkpoint is at hand, ``cleanpose teacher pretrain`` trains the PointBERT (or
PointNet2-SSG) teacher from scratch on clouds sampled from the procedural shape families of
:mod:`cleanpose.data.synth.shapes` and writes it in the official ULIP checkpoint layout, so
``distillation.teacher_checkpoint`` (and the queue's ``run.queue_teacher_checkpoint``) accept the file
unchanged through :func:`cleanpose.models.distillation.load_ulip_checkpoint`.

Data. Sample ``i`` of the run draws, from ``numpy.random.default_rng([seed, i])`` only: a category
(uniform over the dataset's categories), an instance (fresh unit shape parameters from the training range,
never the held-out band; or one of ``instances_per_category`` instances drawn once per category), a
metric size (tight-box diagonal, uniform in the synth world's range of the category), and two views.
Each view is an independent uniform surface sample of the mesh, rotated by a uniform random rotation,
scaled by the diagonal times U(0.8, 1.2), jittered (clipped Gaussian, σ 1 mm) and centred on its mean:
the metric, centred, camera-frame-like clouds the teacher sees during distillation (complete surfaces,
not partial views).

Objective. ``cross_entropy(head(f)) + info_nce(f_1, f_2)``: a linear category head on the teacher's
output feature ``f`` of both views, plus the symmetric InfoNCE between the L2-normalised features of the
two views of each sample (temperature 0.1), the other samples of the batch being the negatives.
AdamW (weight decay 0.05), linear warm-up over the first 5 % of the steps, then cosine decay to 0.

Sizes. :func:`cleanpose.models.distillation.build_teacher` always builds the reference sizes (PointBERT
384 wide, 12 blocks, 512 groups of 32, 768-d output; PointNet2-SSG 256-d), so a file meant for
``distillation.teacher_checkpoint`` must be pretrained at the default sizes; ``teacher_kwargs`` exists
for tests and experiments, whose files load into a teacher built with the same kwargs.

Model. The teacher runs in train mode through its differentiable ``features`` (the frozen ``forward``
is the same computation without gradient): PointBERT with DropPath, PointNet2-SSG with its two
Dropout(0.4) layers, both with BatchNorm on batch statistics.

Randomness: initial weights, DropPath, Dropout and PointNet2-SSG's FPS start points come from one
``torch.Generator`` seeded with ``seed``; data draws are keyed by (seed, sample index), so the number of
loader workers does not change the result.

Imports: torch and numpy at the top; the shape library (trimesh), the augmentation, the teachers and
the training engine are imported by the functions that use them. The command line is in ``cleanpose.cli``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cleanpose.errors import UsageError
from cleanpose.fileio import atomic_writer, ensure_writable_folder

if TYPE_CHECKING:
    import trimesh

    from cleanpose.models.distillation import PointBERTTeacher, PointNet2SSGTeacher

logger = logging.getLogger(__name__)

__all__ = [
    "PRETRAIN_FORMAT_VERSION",
    "ShapePairDataset",
    "TeacherPretrainResult",
    "TeacherPretrainSettings",
    "info_nce_loss",
    "pretrain_teacher",
    "reset_parameters",
    "save_teacher_checkpoint",
    "train_teacher",
]

PRETRAIN_FORMAT_VERSION = 1
"""Version of the extra keys (``format_version``, ``train_accuracy``, ``args``) of a pretrained file."""

TEACHERS = ("pointbert", "pointnet2_ssg")
"""Teacher names, for :func:`_teacher_class`."""
FORMATS = ("nocs", "housecat6d")
"""Category sets, for :func:`_categories`."""

TEMPERATURE = 0.1
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
SCALE_JITTER = (0.8, 1.2)
ACCURACY_WINDOW_FRACTION = 0.1
"""The reported train accuracy is the mean over the last 10 % of the steps (at least one)."""


def _teacher_class(name: str) -> type[PointBERTTeacher | PointNet2SSGTeacher]:
    """The teacher class of a name of :data:`TEACHERS`."""
    from cleanpose.models.distillation import PointBERTTeacher, PointNet2SSGTeacher

    return {"pointbert": PointBERTTeacher, "pointnet2_ssg": PointNet2SSGTeacher}[name]


def _categories(format: str) -> tuple[str, ...]:
    """The category names of a format of :data:`FORMATS`; the label of a category is its index."""
    from cleanpose.data.synth import shapes

    return {"nocs": shapes.NOCS_CATEGORIES, "housecat6d": shapes.HOUSECAT6D_CATEGORIES}[format]


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def _augmented_view(
    mesh: trimesh.Trimesh, diagonal: float, num_points: int, generator: np.random.Generator
) -> np.ndarray:
    """One view of a unit-diagonal mesh: surface sample, random rotation and metric scale, jitter, centred.

    Returns:
        (num_points, 3) float32, metres, centred on the mean.
    """
    import trimesh
    from scipy.spatial.transform import Rotation

    from cleanpose.data.augment import point_noise

    surface, _ = trimesh.sample.sample_surface(mesh, num_points, seed=generator)
    rotation = Rotation.random(random_state=generator).as_matrix()
    scale = diagonal * generator.uniform(*SCALE_JITTER)
    cloud = scale * surface @ rotation.T + point_noise(num_points, generator)
    return (cloud - cloud.mean(axis=0)).astype(np.float32)


class ShapePairDataset(Dataset):
    """Two augmented views of a random synthetic instance per index (module docstring, "Data").

    Args:
        categories: category names; the label is the index in this tuple.
        num_samples: length of the dataset (steps × batch size).
        num_points: N, points per view.
        seed: keys every draw together with the index.
        instances_per_category: None draws fresh shape parameters for every sample; a number draws that
            many instances per category once (from ``[seed, 1, category index, instance index]``) and
            samples pick among them.
    """

    def __init__(
        self,
        categories: Sequence[str],
        num_samples: int,
        num_points: int,
        seed: int,
        instances_per_category: int | None = None,
    ):
        self.categories = tuple(categories)
        self.num_samples = num_samples
        self.num_points = num_points
        self.seed = seed
        self.pools = None
        if instances_per_category is not None:
            from cleanpose.data.synth import shapes

            self.pools = [
                [
                    shapes.sample_unit_parameters(category, np.random.default_rng([seed, 1, label, index]), novel=False)
                    for index in range(instances_per_category)
                ]
                for label, category in enumerate(self.categories)
            ]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Returns ``views`` (2, N, 3) float32 metres and ``label`` () int64 category index."""
        from cleanpose.data.synth import shapes
        from cleanpose.data.synth.scene import DIAGONAL_RANGES, instance_mesh

        generator = np.random.default_rng([self.seed, index])
        label = int(generator.integers(len(self.categories)))
        category = self.categories[label]
        if self.pools is None:
            unit = shapes.sample_unit_parameters(category, generator, novel=False)
        else:
            unit = self.pools[label][int(generator.integers(len(self.pools[label])))]
        mesh = instance_mesh(category, tuple(float(value) for value in unit)).mesh  # cached: pools repeat
        diagonal = float(generator.uniform(*DIAGONAL_RANGES[category]))
        views = np.stack([_augmented_view(mesh, diagonal, self.num_points, generator) for _ in range(2)])
        return {"views": torch.from_numpy(views), "label": torch.tensor(label, dtype=torch.int64)}


# ---------------------------------------------------------------------------------------------------
# Model side
# ---------------------------------------------------------------------------------------------------


def reset_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every random initial weight of a teacher (and head) from ``generator``.

    Linear and convolution layers get PyTorch's default initialisation (Kaiming-uniform weights with
    ``a = √5``, biases uniform in ±1/√fan_in); PointBERT's ``cls_pos`` gets N(0, 1) as in its constructor.
    Norm layers and ``cls_token`` are deterministic already.
    """
    from cleanpose.models.distillation import PointBERTTeacher

    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        if isinstance(layer, PointBERTTeacher):
            nn.init.normal_(layer.cls_pos, generator=generator)


def info_nce_loss(features_a: torch.Tensor, features_b: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE between two views (CLIP / ULIP form).

    With ``a``, ``b`` the L2-normalised rows and ``L = a bᵀ / temperature``, the loss is
    ``(CE(L, diag) + CE(Lᵀ, diag)) / 2``: row ``i`` of one view must pick row ``i`` of the other among
    the B rows.

    Args:
        features_a: (B, F) float, view 1.
        features_b: (B, F) float, view 2 (row i = same sample as row i of view 1).
        temperature: softmax temperature.

    Returns:
        () float, mean over the B samples and both directions.
    """
    logits = F.normalize(features_a, dim=-1) @ F.normalize(features_b, dim=-1).T / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


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


@dataclasses.dataclass(frozen=True)
class TeacherPretrainSettings:
    """What to pretrain and how (the flags of ``cleanpose teacher pretrain``); checked when built.

    Raises:
        UsageError: a value is out of range (the teacher-specific point minimum is checked when the teacher
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
            raise UsageError(f"teacher is {self.teacher!r}; valid teachers: {', '.join(TEACHERS)}")
        if self.format not in FORMATS:
            raise UsageError(f"format is {self.format!r}; valid formats: {', '.join(FORMATS)}")
        if self.steps < 1:
            raise UsageError(f"steps is {self.steps}; need at least 1 optimisation step")
        if self.batch_size < 2:
            raise UsageError(
                f"batch_size is {self.batch_size}; the contrastive term needs at least 2 samples per batch"
            )
        if not self.lr > 0:
            raise UsageError(f"lr is {self.lr}; expected a positive learning rate")
        if self.instances_per_category is not None and self.instances_per_category < 1:
            raise UsageError(
                f"instances_per_category is {self.instances_per_category}; expected None (fresh) or >= 1"
            )
        if self.workers < 0:
            raise UsageError(f"workers is {self.workers}; expected >= 0")


def _build_teacher(name: str, kwargs: Mapping, num_points: int) -> PointBERTTeacher | PointNet2SSGTeacher:
    if "mode" in kwargs:
        raise UsageError("teacher_kwargs must not set 'mode' (pretraining runs the teacher in train mode)")
    cls = _teacher_class(name)
    try:
        teacher = cls(**kwargs, mode="train")
    except TypeError as error:
        raise UsageError(f"teacher_kwargs {dict(kwargs)} do not fit {cls.__name__}: {error}") from None
    minimum = teacher.num_groups if name == "pointbert" else teacher.sa1.num_centers
    if num_points < minimum:
        raise UsageError(
            f"points is {num_points}; the {name} teacher samples {minimum} centres, so needs at least that"
        )
    return teacher


def _learning_rate_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 5 % of the steps, then cosine decay to 0 at ``steps``."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _batch_losses(
    model: PointBERTTeacher | PointNet2SSGTeacher,
    head: nn.Linear,
    batch: dict,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Classification and contrastive loss of one batch, and the head's accuracy over its 2B clouds.

    Args:
        batch: ``views`` (B, 2, N, 3) float32 metres and ``label`` (B,) int64, from :class:`ShapePairDataset`.
    """
    views = batch["views"].to(device)
    labels = batch["label"].to(device).repeat(2)
    batch_size, _, num_points, _ = views.shape
    features = model.features(views.transpose(0, 1).reshape(-1, num_points, 3), generator)  # (2B, F)
    logits = head(features)
    classification = F.cross_entropy(logits, labels)
    contrastive = info_nce_loss(features[:batch_size], features[batch_size:])
    accuracy = float((logits.detach().argmax(dim=-1) == labels).float().mean())
    return classification, contrastive, accuracy


def train_teacher(
    settings: TeacherPretrainSettings, *, device: str | torch.device = "cpu", progress: bool = True
) -> TeacherPretrainResult:
    """Pretrain a teacher on the synthetic shape library (module docstring); no file is written.

    Args:
        settings: the teacher, data and optimisation settings.
        device: where the teacher trains (``cpu``, ``cuda``, a ``torch.device``).
        progress: show a tqdm bar.

    Returns:
        :class:`TeacherPretrainResult`.

    Raises:
        UsageError: ``points`` is below what the teacher samples, or ``teacher_kwargs`` do not fit it.
    """
    from tqdm import tqdm

    steps, batch_size, seed = settings.steps, settings.batch_size, settings.seed
    device = torch.device(device)
    categories = _categories(settings.format)
    generator = torch.Generator().manual_seed(seed)
    model = _build_teacher(settings.teacher, settings.teacher_kwargs or {}, settings.points)
    head = nn.Linear(model.out_dim, len(categories))
    reset_parameters(model, generator)
    reset_parameters(head, generator)
    model.to(device).train()
    head.to(device).train()
    parameters = list(model.parameters()) + list(head.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, steps))
    dataset = ShapePairDataset(categories, steps * batch_size, settings.points, seed, settings.instances_per_category)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=settings.workers,
                        generator=torch.Generator().manual_seed(seed))  # keeps the loader off the global RNG
    logger.info("pretraining %s (%d parameters) on %d %s categories: %d steps of %d samples x 2 views of %d points",
                settings.teacher, sum(p.numel() for p in model.parameters()), len(categories), settings.format, steps,
                batch_size, settings.points)
    losses, accuracies = [], []
    start = time.perf_counter()
    bar = tqdm(loader, total=steps, desc="teacher pretrain", unit="step", disable=not progress)
    for step, batch in enumerate(bar):
        classification, contrastive, accuracy = _batch_losses(model, head, batch, generator, device)
        loss = classification + contrastive
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        accuracies.append(accuracy)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accuracies[-1]:.2f}")
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            logger.info("step %d/%d: loss %.4f (classification %.4f, contrastive %.4f), accuracy %.3f",
                        step + 1, steps, losses[-1], classification.item(), contrastive.item(), accuracies[-1])
    window = max(1, round(ACCURACY_WINDOW_FRACTION * steps))
    train_accuracy = float(np.mean(accuracies[-window:]))
    seconds = time.perf_counter() - start
    logger.info("pretraining done in %.1f s (%.2f s/step); train accuracy over the last %d steps: %.3f (chance %.3f)",
                seconds, seconds / steps, window, train_accuracy, 1.0 / len(categories))
    model.freeze()
    model.eval()
    return TeacherPretrainResult(model, losses, accuracies, train_accuracy)


# ---------------------------------------------------------------------------------------------------
# File
# ---------------------------------------------------------------------------------------------------


def save_teacher_checkpoint(path: str | Path, teacher: nn.Module, *, train_accuracy: float, args: Mapping) -> Path:
    """Atomically write a teacher in the official ULIP checkpoint layout.

    The file is ``{"state_dict": {"module.point_encoder.<ULIP name>": tensor}, "args": Namespace,
    "train_accuracy": float, "format_version": int}``; :func:`load_ulip_checkpoint` reads the
    ``state_dict`` only (names mapped with the teacher's ``reference_key_map``), and ``args`` is an
    ``argparse.Namespace`` as in the official files (allowed there for ``weights_only`` loading).

    Args:
        path: the file to write; its folder must exist.
        teacher: a :class:`PointBERTTeacher` or :class:`PointNet2SSGTeacher`.
        train_accuracy: recorded for the reader, in [0, 1].
        args: the pretraining settings (plain values), stored as ``args``.

    Returns:
        ``path`` as a Path.
    """
    from cleanpose.models.distillation import map_keys

    path = Path(path)
    state = teacher.state_dict()
    renamed = map_keys(list(state), teacher.reference_key_map(), to_reference=True)
    checkpoint = {
        "state_dict": {
            f"module.point_encoder.{renamed[key]}": value.detach().cpu().clone() for key, value in state.items()
        },
        "args": argparse.Namespace(**args),
        "train_accuracy": float(train_accuracy),
        "format_version": PRETRAIN_FORMAT_VERSION,
    }
    with atomic_writer(path) as handle:
        torch.save(checkpoint, handle)
    return path


def _check_output(out_path: Path) -> None:
    """Fail before training when the file could not be written afterwards."""
    if out_path.is_dir():
        raise UsageError(f"{out_path}: is a folder; --out names the checkpoint file to write")
    ensure_writable_folder(out_path.parent)


def pretrain_teacher(
    out_path: str | Path, settings: TeacherPretrainSettings, *, device: str | torch.device = "auto",
    progress: bool = True,
) -> Path:
    """Pretrain a teacher (:func:`train_teacher`) and save it for ``distillation.teacher_checkpoint``.

    Arguments as :func:`train_teacher`; ``device`` also takes ``auto`` (CUDA when available). The output
    folder is created and checked before training starts. The file's ``args`` hold every setting but
    ``workers`` (which does not change the result), plus the categories, weight decay and temperature.

    Returns:
        ``out_path`` as a Path.

    Raises:
        UsageError: ``points`` does not fit the teacher, or the output folder cannot be written.
        ConfigError: ``device='cuda'`` without a CUDA device.
    """
    from cleanpose.engine.train import resolve_device

    out_path = Path(out_path)
    _check_output(out_path)
    resolved = resolve_device(device) if isinstance(device, str) else torch.device(device)
    result = train_teacher(settings, device=resolved, progress=progress)
    args = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings) if field.name != "workers"}
    args.update(source="cleanpose teacher pretrain", teacher_kwargs=dict(settings.teacher_kwargs or {}),
                categories=_categories(settings.format), weight_decay=WEIGHT_DECAY, temperature=TEMPERATURE)
    save_teacher_checkpoint(out_path, result.teacher, train_accuracy=result.train_accuracy, args=args)
    logger.info("wrote the pretrained %s teacher to %s", settings.teacher, out_path)
    return out_path

