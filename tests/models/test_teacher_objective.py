"""Tests of cleanpose.models.teacher_objective: hand-derived InfoNCE, seeded re-initialisation, loss terms."""

import math

import pytest
import torch
import torch.nn.functional as F

from cleanpose.errors import ConfigError
from cleanpose.models.distillation import PointBERTTeacher
from cleanpose.models.teacher_objective import (
    TeacherPretrainObjective,
    build_pretraining_teacher,
    info_nce_loss,
    reset_parameters,
)

TINY_BERT = dict(trans_dim=32, depth=2, num_heads=2, num_groups=16, group_size=8, encoder_dims=32, drop_path_rate=0.1)


def test_info_nce_of_orthogonal_features_by_hand():
    # Rows of both views orthonormal after normalisation: logits = diag(1/τ) or its swap.
    view_a = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    matched = torch.tensor([[2.0, 0.0], [0.0, 7.0]], dtype=torch.float64)
    swapped = matched.flip(0)
    assert info_nce_loss(view_a, matched, 0.1).item() == pytest.approx(math.log(1 + math.exp(-10)), rel=1e-12)
    assert info_nce_loss(view_a, swapped, 0.1).item() == pytest.approx(math.log(1 + math.exp(10)), rel=1e-12)


def test_info_nce_of_a_60_degree_pair_by_hand():
    # a = (e1, e2), b = ((1/2, √3/2), e2): logits L = [[1/2, 0], [√3/2, 1]] / τ.
    tau = 0.2
    l00, l01, l10, l11 = 0.5 / tau, 0.0, math.sqrt(3) / 2 / tau, 1.0 / tau
    rows = (-l00 + math.log(math.exp(l00) + math.exp(l01)) - l11 + math.log(math.exp(l10) + math.exp(l11))) / 2
    columns = (-l00 + math.log(math.exp(l00) + math.exp(l10)) - l11 + math.log(math.exp(l01) + math.exp(l11))) / 2
    view_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    view_b = torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 1.0]], dtype=torch.float64)
    assert info_nce_loss(view_a, view_b, tau).item() == pytest.approx((rows + columns) / 2, rel=1e-12)


def test_reset_parameters_redraws_every_random_weight():
    first = PointBERTTeacher(**TINY_BERT)
    torch.randn(1000)  # move the global RNG: constructors draw from it, reset_parameters must not
    second = PointBERTTeacher(**TINY_BERT)
    assert not torch.equal(first.cls_pos, second.cls_pos)
    for teacher in (first, second):
        reset_parameters(teacher, torch.Generator().manual_seed(7))
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_objective_terms_match_a_direct_computation():
    # Eval-mode teacher (no DropPath, BatchNorm on running statistics): the terms are a function of the
    # features, recomputed here from the teacher and head directly.
    objective = TeacherPretrainObjective(PointBERTTeacher(**TINY_BERT, mode="train"), num_categories=3).double().eval()
    views = torch.randn(4, 2, 32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    labels = torch.tensor([0, 2, 1, 2])
    terms = objective(views, labels, torch.Generator().manual_seed(1))
    first = objective.teacher.features(views[:, 0], None)
    second = objective.teacher.features(views[:, 1], None)
    logits = objective.head(torch.cat([first, second]))
    classification = F.cross_entropy(logits, labels.repeat(2))
    assert terms["classification"].item() == pytest.approx(classification.item(), rel=1e-12)
    assert terms["contrastive"].item() == pytest.approx(info_nce_loss(first, second).item(), rel=1e-12)
    assert terms["total"].item() == pytest.approx(
        terms["classification"].item() + terms["contrastive"].item(), rel=1e-12
    )
    hits = (logits.argmax(dim=-1) == labels.repeat(2)).double().mean().item()
    assert terms["accuracy"].item() == pytest.approx(hits)


def test_bad_teacher_settings():
    with pytest.raises(ConfigError, match=r"teacher is 'pointmae'; valid teachers: pointbert, pointnet2_ssg"):
        build_pretraining_teacher("pointmae", {}, 1024)
    with pytest.raises(ConfigError, match=r"teacher_kwargs must not set 'mode'"):
        build_pretraining_teacher("pointbert", {"mode": "eval"}, 1024)
    with pytest.raises(ConfigError, match=r"do not fit PointBERTTeacher"):
        build_pretraining_teacher("pointbert", {"width": 3}, 1024)
    with pytest.raises(ConfigError, match=r"points is 8; the pointbert teacher samples 16 centres"):
        build_pretraining_teacher("pointbert", TINY_BERT, 8)
