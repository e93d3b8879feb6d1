"""Validation during training: the steps it runs at, its metrics against `cleanpose test` of the same
checkpoint (an independent run of the test command), best.pt, resume, TensorBoard and the curve."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import cleanpose.engine.hooks as hooks
import cleanpose.engine.train as train_module
from cleanpose.config import TrainConfig, load_config
from cleanpose.engine.hooks import HookBase, read_loss_log
from cleanpose.engine.test import evenly_spaced
from cleanpose.engine.train import train
from cleanpose.errors import ConfigError
from cleanpose.models.checkpoint import read_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SEVEN = ("iou25", "iou50", "iou75", "5deg2cm", "5deg5cm", "10deg2cm", "10deg5cm")


class _WeightRecorder(HookBase):
    """Keeps a copy of the network's weights after every step."""

    def __init__(self, store: dict):
        self.store = store

    def after_step(self, result) -> None:
        self.store[self.trainer.step] = {key: value.clone() for key, value in self.trainer.network.state_dict().items()}


def _record_weights(monkeypatch) -> dict:
    store = {}
    original = train_module.default_hooks
    monkeypatch.setattr(
        train_module, "default_hooks", lambda *args, **kwargs: [*original(*args, **kwargs), _WeightRecorder(store)]
    )
    return store


def _assert_weights_equal(checkpoint: dict, weights: dict) -> None:
    for key, value in checkpoint["model"].items():
        assert torch.equal(value, weights[key]), key


def test_validation_equals_cleanpose_test_of_the_same_checkpoint(train_config_file, tmp_path, monkeypatch):
    path = train_config_file(
        data={"val_split": "real", "val_masks": "gt", "val_max_images": 0},
        run={
            "epochs": 2,
            "iterations_per_epoch": 3,
            "validate_every": 4,
            "best_metric": "iou25",
            "checkpoint_every": 100,
        },  # fmt: skip
    )
    weights = _record_weights(monkeypatch)
    train(load_config(path, TrainConfig), quiet=True)
    run = tmp_path / "run"

    records = read_loss_log(run / "metrics.jsonl")
    assert [record["step"] for record in records] == [4, 6]  # every 4 steps, and the last step (6)
    assert all(record["images"] == 4 for record in records)  # the whole real_test split: 2 scenes x 2 frames

    # best.pt: the first step with the highest iou25, its weights, its value in the hook state.
    best_record = max(records, key=lambda record: (record["iou25"], -record["step"]))
    best = read_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == best_record["step"]
    assert best["hooks"]["ValidationHook"] == {"best_metric": "iou25", "value": best_record["iou25"],
                                               "step": best_record["step"]}  # fmt: skip
    _assert_weights_equal(best, weights[best_record["step"]])

    # Oracle: `cleanpose test` of best.pt, another process reading the split from disk again.
    out = tmp_path / "test_best"
    command = [sys.executable, "-m", "cleanpose", "--quiet", "test", "--config", str(path), "--set",
               "data.test_split=real", "--masks", "gt", "--checkpoint", str(run / "checkpoints" / "best.pt"),
               "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    tested = json.loads((out / "metrics.json").read_text())["mean"]
    assert {key: best_record[key] for key in SEVEN} == tested
    assert any(value not in (None, 0.0) for value in tested.values())

    # TensorBoard scalars and the curve.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard" / "val"))
    events.Reload()
    for key in SEVEN:
        scalars = events.Scalars(f"val/{key}")
        assert [scalar.step for scalar in scalars] == [4, 6]
        assert [scalar.value for scalar in scalars] == pytest.approx([record[key] for record in records], rel=1e-6)
    assert (run / "metrics_curve.png").stat().st_size > 1000


def test_best_checkpoint_follows_the_metric_and_resume_keeps_it(train_config_file, tmp_path, monkeypatch):
    # The metric is scripted (call order) so that the best validation is neither the first nor the last.
    scripted = iter([10.0, 30.0, 20.0, 25.0])
    real_means = hooks.metrics_to_json
    monkeypatch.setattr(
        hooks,
        "metrics_to_json",
        lambda metrics: {"mean": {**real_means(metrics)["mean"], "10deg5cm": next(scripted)}},
    )
    weights = _record_weights(monkeypatch)
    validation = {"val_split": "real", "val_max_images": 3}
    path = train_config_file(data=validation, run={"epochs": 1, "iterations_per_epoch": 3, "validate_every": 2})
    train(load_config(path, TrainConfig), quiet=True)  # validates at steps 2 and 3 (the end): 10, 30
    run = tmp_path / "run"
    assert read_checkpoint(run / "checkpoints" / "best.pt")["step"] == 3

    # A killed run may have logged a validation after its last checkpoint: resume forgets it.
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 4, "10deg5cm": 99.0}) + "\n")
    longer = train_config_file(
        name="longer.yaml", data=validation, run={"epochs": 2, "iterations_per_epoch": 3, "validate_every": 2}
    )
    train(load_config(longer, TrainConfig), resume=True, quiet=True)  # steps 4..6: validates at 4 and 6: 20, 25

    records = read_loss_log(run / "metrics.jsonl")
    assert [(record["step"], record["10deg5cm"]) for record in records] == [(2, 10.0), (3, 30.0), (4, 20.0), (6, 25.0)]
    assert all(record["images"] == 3 for record in records)  # val_max_images of the 4 test frames
    best = read_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == 3
    _assert_weights_equal(best, weights[3])
    state = {"best_metric": "10deg5cm", "value": 30.0, "step": 3}
    assert read_checkpoint(run / "checkpoints" / "last.pt")["hooks"]["ValidationHook"] == state


def test_evenly_spaced_images():
    assert evenly_spaced(10, 4).tolist() == [0, 2, 5, 7]  # floor(i * 10 / 4)
    assert evenly_spaced(4, 3).tolist() == [0, 1, 2]
    assert evenly_spaced(5, 0).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(3, 7).tolist() == [0, 1, 2]
    chosen = evenly_spaced(25000, 100)
    assert len(np.unique(chosen)) == 100 and chosen[-1] == 24750


def test_validation_split_must_fit_the_data_format(train_config_file):
    path = train_config_file(run={"validate_every": 2})
    with pytest.raises(ConfigError, match="val_split 'housecat6d' does not fit data.format 'nocs'"):
        load_config(path, TrainConfig, overrides=["data.val_split=housecat6d"])
    with pytest.raises(ConfigError, match="best_metric"):
        load_config(path, TrainConfig, overrides=["run.best_metric=10deg10cm"])
    assert load_config(path, TrainConfig, overrides=["run.validate_every=0", "data.val_split=housecat6d"])
