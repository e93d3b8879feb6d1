"""Tests of cleanpose.engine.teacher_pretrain: learning, ULIP-layout round trip, determinism, errors, CLI."""

import argparse

import numpy as np
import pytest
import torch

from cleanpose.cli import build_parser, main
from cleanpose.engine.teacher_pretrain import (
    PRETRAIN_FORMAT_VERSION,
    TeacherPretrainSettings,
    pretrain_teacher,
    train_teacher,
)
from cleanpose.errors import ConfigError, OutputError
from cleanpose.models.distillation import (
    PointBERTTeacher,
    PointNet2SSGTeacher,
    load_ulip_checkpoint,
    save_ulip_checkpoint,
)

TINY_BERT = dict(trans_dim=32, depth=2, num_heads=2, num_groups=16, group_size=8, encoder_dims=32, drop_path_rate=0.1)
TINY_SSG = dict(
    num_centers=(16, 8),
    radii=(0.05, 0.1),
    num_samples=(8, 4),
    channels=((8, 8, 16), (16, 16, 24), (24, 32, 40)),
    out_dim=12,
)
TINY = {"pointbert": (PointBERTTeacher, TINY_BERT), "pointnet2_ssg": (PointNet2SSGTeacher, TINY_SSG)}


def _cloud(batch, num_points, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_points, 3, generator=generator) * 0.08


# ------------------------------------------------------------------------------------------ training


def test_loss_falls_and_accuracy_beats_chance():
    # 40 steps of 8 samples, lr 3e-3. Seeds 0-9: the loss fell by 0.23-0.69 (mean of the first vs the last
    # 10 steps; seed 9 -0.07, batch-to-batch noise), train accuracy 0.28-0.66 (chance 1/6).
    # Seed 0: fall 0.425, accuracy 0.375.
    settings = TeacherPretrainSettings(
        teacher_kwargs={**TINY_BERT, "drop_path_rate": 0.0},
        points=256,
        steps=40,
        batch_size=8,
        lr=3e-3,
        seed=0,
        instances_per_category=8,
    )
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
    settings = TeacherPretrainSettings(
        teacher=name, teacher_kwargs=sizes, points=64, steps=3, batch_size=4, lr=1e-3, seed=2
    )
    result = train_teacher(settings, device="cpu", progress=False)
    path = save_ulip_checkpoint(
        tmp_path / "teacher.pt",
        result.teacher,
        args={"teacher": name},
        train_accuracy=result.train_accuracy,
        format_version=PRETRAIN_FORMAT_VERSION,
    )
    with torch.serialization.safe_globals([argparse.Namespace]):
        content = torch.load(path, weights_only=True)
    assert set(content) == {"state_dict", "args", "train_accuracy", "format_version"}
    assert content["format_version"] == PRETRAIN_FORMAT_VERSION and content["args"].teacher == name
    assert all(key.startswith("module.point_encoder.") for key in content["state_dict"])
    assert len(content["state_dict"]) == len(result.teacher.state_dict())
    fresh = cls(**sizes, mode="eval")
    load_ulip_checkpoint(path, fresh)
    points = _cloud(2, 64, seed=3)
    assert torch.equal(
        fresh(points, torch.Generator().manual_seed(1)), result.teacher(points, torch.Generator().manual_seed(1))
    )


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
    assert not torch.equal(
        first["state_dict"]["module.point_encoder.cls_pos"], other["state_dict"]["module.point_encoder.cls_pos"]
    )


# ------------------------------------------------------------------------------------------ errors and CLI


def test_bad_arguments_fail_before_training(tmp_path):
    out = tmp_path / "teacher.pt"
    common = dict(teacher_kwargs=TINY_BERT, points=64, batch_size=4)

    def pretrain(path, **settings):
        return pretrain_teacher(path, TeacherPretrainSettings(**settings), device="cpu", progress=False)

    with pytest.raises(ConfigError, match=r"steps is 0; need at least 1 optimisation step"):
        pretrain(out, steps=0, **common)
    with pytest.raises(ConfigError, match=r"batch_size is 1; the contrastive term needs at least 2"):
        pretrain(out, steps=1, **{**common, "batch_size": 1})
    with pytest.raises(ConfigError, match=r"teacher is 'pointmae'; valid teachers: pointbert, pointnet2_ssg"):
        pretrain(out, steps=1, teacher="pointmae", **common)
    with pytest.raises(ConfigError, match=r"format is 'ycb'; valid formats: nocs, housecat6d"):
        pretrain(out, steps=1, format="ycb", **common)
    with pytest.raises(ConfigError, match=r"points is 8; the pointbert teacher samples 16 centres"):
        pretrain(out, steps=1, **{**common, "points": 8})
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=r"a_file/sub: folder is not writable"):
        pretrain(blocker / "sub" / "teacher.pt", steps=1, **common)
    with pytest.raises(OutputError, match=r"is a folder; --out names the checkpoint file to write"):
        pretrain(tmp_path, steps=1, **common)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_cli_parser_and_error(tmp_path, capsys):
    args = build_parser().parse_args(["teacher", "pretrain", "--out", "t.pt", "--steps", "0", "--format", "housecat6d"])
    assert (args.teacher, args.format, args.steps, args.batch_size, args.device, args.instances_per_category) == (
        "pointbert",
        "housecat6d",
        0,
        32,
        "auto",
        None,
    )
    assert main(["--quiet", "teacher", "pretrain", "--out", str(tmp_path / "t.pt"), "--steps", "0"]) == 2
    assert "cleanpose teacher: error: steps is 0; need at least 1 optimisation step" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
