"""Tests of cleanpose.engine.teacher_pretrain: hand-derived InfoNCE, learning, ULIP-layout round trip, determinism."""

import argparse
import math

import numpy as np
import pytest
import torch

from cleanpose.cli import build_parser
from cleanpose.data.synth.scene import DIAGONAL_RANGES
from cleanpose.data.synth.shapes import HELD_OUT_BAND, NOCS_CATEGORIES
from cleanpose.engine.teacher_pretrain import (
    FORMATS,
    TEACHERS,
    PRETRAIN_FORMAT_VERSION,
    ShapePairDataset,
    info_nce_loss,
    TeacherPretrainSettings,
    pretrain_teacher,
    reset_parameters,
    save_teacher_checkpoint,
    train_teacher,
)
from cleanpose.errors import UsageError
from cleanpose.models.distillation import PointBERTTeacher, PointNet2SSGTeacher, load_ulip_checkpoint

TINY_BERT = dict(trans_dim=32, depth=2, num_heads=2, num_groups=16, group_size=8, encoder_dims=32, drop_path_rate=0.1)
TINY_SSG = dict(
    num_centers=(16, 8), radii=(0.05, 0.1), num_samples=(8, 4), channels=((8, 8, 16), (16, 16, 24), (24, 32, 40)),
    out_dim=12,
)
TINY = {"pointbert": (PointBERTTeacher, TINY_BERT), "pointnet2_ssg": (PointNet2SSGTeacher, TINY_SSG)}


def _cloud(batch, num_points, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_points, 3, generator=generator) * 0.08


# ------------------------------------------------------------------------------------------ InfoNCE


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


# ------------------------------------------------------------------------------------------ parts


def test_reset_parameters_redraws_every_random_weight():
    first = PointBERTTeacher(**TINY_BERT)
    torch.randn(1000)  # move the global RNG: constructors draw from it, reset_parameters must not
    second = PointBERTTeacher(**TINY_BERT)
    assert not torch.equal(first.cls_pos, second.cls_pos)
    for teacher in (first, second):
        reset_parameters(teacher, torch.Generator().manual_seed(7))
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_shape_pairs_are_keyed_metric_centred_views():
    dataset = ShapePairDataset(NOCS_CATEGORIES, num_samples=40, num_points=128, seed=5)
    later = [dataset[index] for index in (7, 3)]
    again = ShapePairDataset(NOCS_CATEGORIES, num_samples=40, num_points=128, seed=5)
    for index, sample in zip((7, 3), later):
        assert torch.equal(again[index]["views"], sample["views"])  # keyed by index, not by call order
    other = ShapePairDataset(NOCS_CATEGORIES, num_samples=40, num_points=128, seed=6)
    assert not torch.equal(other[3]["views"], later[1]["views"])
    for index in range(12):
        sample = dataset[index]
        views, category = sample["views"], NOCS_CATEGORIES[int(sample["label"])]
        assert views.shape == (2, 128, 3) and views.dtype == torch.float32
        assert views.double().mean(dim=1).abs().max() < 1e-6
        assert not torch.equal(views[0], views[1])
        # Box diagonal d in [0.8 low, 1.2 high]; the widest point pair spans at most d (plus 2 × 5 mm jitter)
        # and about the longest box edge, at least d/√3 (0.8: slack for the finite surface sample).
        low, high = DIAGONAL_RANGES[category]
        for view in views.double():
            extent = torch.cdist(view, view).max().item()
            assert 0.8 * (0.8 * low) / math.sqrt(3) <= extent <= 1.2 * high + 0.02, (category, extent)
    assert {int(dataset[index]["label"]) for index in range(40)} == set(range(6))


def test_instance_pools_come_from_the_training_range():
    dataset = ShapePairDataset(NOCS_CATEGORIES, num_samples=10, num_points=32, seed=1, instances_per_category=50)
    first_entries = np.array([unit[0] for pool in dataset.pools for unit in pool])
    assert len(first_entries) == 300
    assert not np.any((first_entries >= HELD_OUT_BAND[0]) & (first_entries < HELD_OUT_BAND[1]))


# ------------------------------------------------------------------------------------------ training


def test_loss_falls_and_accuracy_beats_chance():
    # 40 steps of 8 samples, lr 3e-3. Seeds 0-9: the loss fell by 0.23-0.69 (mean of the first vs the last
    # 10 steps; seed 9 -0.07, batch-to-batch noise), train accuracy 0.28-0.66 (chance 1/6).
    # Seed 0: fall 0.425, accuracy 0.375.
    settings = TeacherPretrainSettings(teacher_kwargs={**TINY_BERT, "drop_path_rate": 0.0}, points=256, steps=40,
                                       batch_size=8, lr=3e-3, seed=0, instances_per_category=8)
    result = train_teacher(settings, device="cpu", progress=False)
    losses = np.array(result.losses)
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert losses[:10].mean() - losses[-10:].mean() > 0.2
    assert result.train_accuracy == pytest.approx(np.mean(result.accuracies[-4:]))
    assert result.train_accuracy >= 0.25
    assert not result.teacher.training
    assert not any(parameter.requires_grad for parameter in result.teacher.parameters())


@pytest.mark.parametrize("name", ["pointbert", "pointnet2_ssg"])
def test_saved_file_loads_strictly_and_gives_the_same_features(tmp_path, name):
    cls, sizes = TINY[name]
    settings = TeacherPretrainSettings(teacher=name, teacher_kwargs=sizes, points=64, steps=3, batch_size=4, lr=1e-3,
                                       seed=2)
    result = train_teacher(settings, device="cpu", progress=False)
    path = save_teacher_checkpoint(tmp_path / "teacher.pt", result.teacher, train_accuracy=result.train_accuracy,
                                   args={"teacher": name})
    with torch.serialization.safe_globals([argparse.Namespace]):
        content = torch.load(path, weights_only=True)
    assert set(content) == {"state_dict", "args", "train_accuracy", "format_version"}
    assert content["format_version"] == PRETRAIN_FORMAT_VERSION and content["args"].teacher == name
    assert all(key.startswith("module.point_encoder.") for key in content["state_dict"])
    assert len(content["state_dict"]) == len(result.teacher.state_dict())
    fresh = cls(**sizes, mode="eval")
    load_ulip_checkpoint(path, fresh)
    points = _cloud(2, 64, seed=3)
    assert torch.equal(fresh(points, torch.Generator().manual_seed(1)),
                       result.teacher(points, torch.Generator().manual_seed(1)))


def test_same_seed_same_file_whatever_the_workers(tmp_path):
    common = dict(teacher_kwargs=TINY_BERT, points=64, steps=3, batch_size=4, lr=1e-3)

    def pretrain(path, **settings):
        return pretrain_teacher(path, TeacherPretrainSettings(**common, **settings), device="cpu", progress=False)

    first = pretrain(tmp_path / "a" / "first.pt", seed=11)
    torch.randn(1000)
    second = pretrain(tmp_path / "second.pt", seed=11, workers=2)
    other = pretrain(tmp_path / "other.pt", seed=12)
    with torch.serialization.safe_globals([argparse.Namespace]):
        first, second, other = (torch.load(path, weights_only=True) for path in (first, second, other))
    assert first["args"] == second["args"]
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key
    assert first["train_accuracy"] == second["train_accuracy"]
    assert not torch.equal(first["state_dict"]["module.point_encoder.cls_pos"],
                           other["state_dict"]["module.point_encoder.cls_pos"])


# ------------------------------------------------------------------------------------------ errors and CLI


def test_bad_arguments_fail_before_training(tmp_path):
    out = tmp_path / "teacher.pt"
    common = dict(teacher_kwargs=TINY_BERT, points=64, batch_size=4)

    def pretrain(path, **settings):
        return pretrain_teacher(path, TeacherPretrainSettings(**settings), device="cpu", progress=False)

    with pytest.raises(UsageError, match=r"steps is 0; need at least 1 optimisation step"):
        pretrain(out, steps=0, **common)
    with pytest.raises(UsageError, match=r"batch_size is 1; the contrastive term needs at least 2"):
        pretrain(out, steps=1, **{**common, "batch_size": 1})
    with pytest.raises(UsageError, match=r"teacher is 'pointmae'; valid teachers: pointbert, pointnet2_ssg"):
        pretrain(out, steps=1, teacher="pointmae", **common)
    with pytest.raises(UsageError, match=r"format is 'ycb'; valid formats: nocs, housecat6d"):
        pretrain(out, steps=1, format="ycb", **common)
    with pytest.raises(UsageError, match=r"points is 8; the pointbert teacher samples 16 centres"):
        pretrain(out, steps=1, **{**common, "points": 8})
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match=r"a_file/sub: folder is not writable"):
        pretrain(blocker / "sub" / "teacher.pt", steps=1, **common)
    with pytest.raises(UsageError, match=r"is a folder; --out names the checkpoint file to write"):
        pretrain(tmp_path, steps=1, **common)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_cli_parser():
    for teacher in TEACHERS:  # the command line lists the choices without importing this module
        for format in FORMATS:
            arguments = ["teacher", "pretrain", "--out", "t.pt", "--teacher", teacher, "--format", format]
            build_parser().parse_args(arguments)
    args = build_parser().parse_args(["teacher", "pretrain", "--out", "t.pt", "--steps", "0", "--format", "housecat6d"])
    assert (args.teacher, args.format, args.steps, args.batch_size, args.device, args.instances_per_category) == (
        "pointbert", "housecat6d", 0, 32, "auto", None
    )
    args.quiet = True
    with pytest.raises(UsageError, match="steps is 0"):
        args.handler(args)
