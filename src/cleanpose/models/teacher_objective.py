"""The objective of teacher pretraining: a category head and a two-view contrastive term on a point teacher.

``cross_entropy(head(f)) + info_nce(f_1, f_2)``: a linear category head on the teacher's output feature
``f`` of both views, plus the symmetric InfoNCE between the L2-normalised features of the two views of each
sample (temperature 0.1), the other samples of the batch being the negatives.

The teacher runs in train mode through its differentiable ``features`` (the frozen ``forward`` is the same
computation without gradient): PointBERT with DropPath, PointNet2-SSG with its two Dropout(0.4) layers,
both with BatchNorm on batch statistics. DropPath, Dropout and PointNet2-SSG's FPS start points draw from
the generator passed to :meth:`TeacherPretrainObjective.forward`; initial weights from the one passed to
:func:`reset_parameters`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cleanpose.errors import ConfigError
from cleanpose.models.distillation import PointBERTTeacher, PointNet2SSGTeacher

__all__ = [
    "TEACHERS",
    "TEMPERATURE",
    "TeacherPretrainObjective",
    "build_pretraining_teacher",
    "info_nce_loss",
    "reset_parameters",
]

TEACHERS = {"pointbert": PointBERTTeacher, "pointnet2_ssg": PointNet2SSGTeacher}
"""Teacher classes by name."""
TEMPERATURE = 0.1
"""Softmax temperature of the contrastive term."""


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


def reset_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every random initial weight of a teacher (and head) from ``generator``.

    Linear and convolution layers get PyTorch's default initialisation (Kaiming-uniform weights with
    ``a = √5``, biases uniform in ±1/√fan_in); PointBERT's ``cls_pos`` gets N(0, 1) as in its constructor.
    Norm layers and ``cls_token`` are deterministic already. Layers are visited in ``module.modules()``
    order, so the draws depend only on the architecture and the generator.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        if isinstance(layer, PointBERTTeacher):
            nn.init.normal_(layer.cls_pos, generator=generator)


def build_pretraining_teacher(name: str, kwargs: Mapping, num_points: int) -> PointBERTTeacher | PointNet2SSGTeacher:
    """A teacher of :data:`TEACHERS` in train mode, checked against the cloud size it will see.

    Args:
        name: ``pointbert`` or ``pointnet2_ssg``.
        kwargs: constructor sizes (empty: the reference sizes); must not set ``mode``.
        num_points: N, points per cloud; at least the number of centres the teacher samples.

    Raises:
        ConfigError: unknown name, ``kwargs`` that set ``mode`` or do not fit the class, or too few points.
    """
    if name not in TEACHERS:
        raise ConfigError(f"teacher is {name!r}; valid teachers: {', '.join(TEACHERS)}")
    if "mode" in kwargs:
        raise ConfigError("teacher_kwargs must not set 'mode' (pretraining runs the teacher in train mode)")
    cls = TEACHERS[name]
    try:
        teacher = cls(**kwargs, mode="train")
    except TypeError as error:
        raise ConfigError(f"teacher_kwargs {dict(kwargs)} do not fit {cls.__name__}: {error}") from None
    minimum = teacher.num_groups if name == "pointbert" else teacher.sa1.num_centers
    if num_points < minimum:
        raise ConfigError(
            f"points is {num_points}; the {name} teacher samples {minimum} centres, so needs at least that"
        )
    return teacher


class TeacherPretrainObjective(nn.Module):
    """A teacher and its linear category head, returning the pretraining loss terms (module docstring).

    Args:
        teacher: a :class:`PointBERTTeacher` or :class:`PointNet2SSGTeacher` (``mode='train'``).
        num_categories: C, outputs of the head.
    """

    def __init__(self, teacher: PointBERTTeacher | PointNet2SSGTeacher, num_categories: int):
        super().__init__()
        self.teacher = teacher
        self.head = nn.Linear(teacher.out_dim, num_categories)

    def forward(self, views: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Loss terms of one batch and the head's accuracy over its 2B clouds.

        Args:
            views: (B, 2, N, 3) float32, metres, two views per sample.
            labels: (B,) int64 category indices.
            generator: the teacher's DropPath / Dropout / FPS draws.

        Returns:
            ``classification``, ``contrastive`` and ``total`` (their sum): () float losses;
            ``accuracy``: () float in [0, 1], detached.
        """
        labels = labels.repeat(2)
        batch_size, _, num_points, _ = views.shape
        features = self.teacher.features(views.transpose(0, 1).reshape(-1, num_points, 3), generator)  # (2B, F)
        logits = self.head(features)
        classification = F.cross_entropy(logits, labels)
        contrastive = info_nce_loss(features[:batch_size], features[batch_size:])
        accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return {
            "classification": classification,
            "contrastive": contrastive,
            "total": classification + contrastive,
            "accuracy": accuracy,
        }
