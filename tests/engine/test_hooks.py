"""Tests of the hook protocol: ``after_train`` runs after a crash, and the crash is what propagates."""

import logging
from types import SimpleNamespace

import pytest
import torch

from cleanpose.engine.hooks import HookBase, training_hooks
from cleanpose.engine.train import Trainer


class _Recorder(HookBase):
    def __init__(self, calls, name, fail_after_train=False):
        self.calls, self.name, self.fail_after_train = calls, name, fail_after_train

    def before_train(self):
        self.calls.append((self.name, "before_train"))

    def after_step(self, result):
        self.calls.append((self.name, "after_step", self.trainer.step))

    def after_train(self):
        self.calls.append((self.name, "after_train"))
        if self.fail_after_train:
            raise OSError("disk gone")


class _Samples(torch.utils.data.Dataset):
    stream = 0

    def __len__(self):
        return 8

    def __getitem__(self, key):
        return {"pts": torch.zeros(2, 3)}

    def set_epoch(self, epoch):
        pass


def _trainer(hooks, fail_at_step):
    config = SimpleNamespace(
        run=SimpleNamespace(micro_batches=1, iterations_per_epoch=None, epochs=1, seed=0, cuda_graph=False),
        data=SimpleNamespace(batch_sizes=[2], workers=0),
    )
    trainer = Trainer(config, None, None, None, None, [_Samples()], torch.device("cpu"), hooks)

    def run_step(shards):
        if trainer.step == fail_at_step:
            raise RuntimeError("step failed")
        return SimpleNamespace(step=trainer.step)

    trainer.run_step = run_step
    return trainer


def test_after_train_runs_when_a_step_raises():
    calls = []
    trainer = _trainer([_Recorder(calls, "a"), _Recorder(calls, "b")], fail_at_step=2)
    with pytest.raises(RuntimeError, match="step failed"):
        trainer.train()
    assert calls == [
        ("a", "before_train"),
        ("b", "before_train"),
        ("a", "after_step", 1),
        ("b", "after_step", 1),
        ("a", "after_step", 2),
        ("b", "after_step", 2),
        ("a", "after_train"),
        ("b", "after_train"),
    ]


def test_a_completed_run_calls_after_train_once():
    calls = []
    trainer = _trainer([_Recorder(calls, "a")], fail_at_step=-1)
    trainer.train()
    assert trainer.step == trainer.max_steps == 4
    assert calls == [("a", "before_train")] + [("a", "after_step", s) for s in (1, 2, 3, 4)] + [("a", "after_train")]


def test_a_failing_after_train_is_logged_and_the_original_error_propagates(caplog):
    calls = []
    hooks = [_Recorder(calls, "a", fail_after_train=True), _Recorder(calls, "b")]
    with caplog.at_level(logging.ERROR, logger="cleanpose.engine.hooks"):
        with pytest.raises(RuntimeError, match="step failed"):
            with training_hooks(hooks):
                raise RuntimeError("step failed")
    assert calls == [("a", "before_train"), ("b", "before_train"), ("a", "after_train"), ("b", "after_train")]
    assert "_Recorder.after_train failed after a training error" in caplog.text
    # Without an error in the body, an after_train error is the run's error.
    with pytest.raises(OSError, match="disk gone"):
        with training_hooks(hooks[:1]):
            pass
