"""Training: DDP on 2 gloo ranks equals one process with 2 micro-batches; SIGKILL + resume; clear failures."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cleanpose.config import TrainConfig, load_config
from cleanpose.engine.hooks import read_loss_log
from cleanpose.engine.train import train
from cleanpose.errors import ConfigError, OutputError
from cleanpose.models.checkpoint import read_checkpoint
from tests.engine.conftest import TINY_MODEL

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args, timeout=300):
    command = [sys.executable, "-m", "cleanpose", "--quiet", *args]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _losses(run_dir):
    return [(record["step"], record["loss/total"]) for record in read_loss_log(run_dir / "losses.jsonl")]


def _assert_losses_close(actual, expected, rel):
    assert [step for step, _ in actual] == [step for step, _ in expected]
    for (step, a), (_, b) in zip(actual, expected):
        assert math.isclose(a, b, rel_tol=rel), (step, a, b)


def test_two_gloo_ranks_equal_one_process_with_two_micro_batches(train_config_file, tmp_path):
    # Global batch 30 CAMERA + 10 REAL: 2 ranks x 20 objects vs one process running the same halves as
    # micro-batches. BatchNorm statistics are per shard in both; running statistics are not compared.
    config = train_config_file(
        data={"batch_sizes": [30, 10], "images_per_epoch": [60, 20]},
        run={"epochs": 1, "iterations_per_epoch": 2, "checkpoint_every": 2},
    )
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _cli("train", "--config", str(config), "--set", f"run.out_dir={single}", "run.micro_batches=2")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "cleanpose", "--quiet", "train", "--config", str(config), "--set", f"run.out_dir={ddp}",
                "run.validate_every=1", "data.val_split=real", "data.val_masks=gt"]  # fmt: skip
    done = subprocess.run(torchrun, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # validation (rank 0 only, the other rank at a barrier) leaves the training unchanged
    assert [record["step"] for record in read_loss_log(ddp / "metrics.jsonl")] == [1, 2]

    _assert_losses_close(_losses(ddp), _losses(single), rel=1e-5)
    one, two = read_checkpoint(single / "checkpoints/last.pt"), read_checkpoint(ddp / "checkpoints/last.pt")
    torch.testing.assert_close(two["queue"], one["queue"], rtol=1e-5, atol=1e-5)
    initial = torch.load(tmp_path / "queue.pt", weights_only=True)["features"]
    assert not torch.allclose(one["queue"], initial)  # the pushes happened
    for key, value in one["model"].items():
        if "running_" not in key and "num_batches_tracked" not in key:
            torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(train_config_file, tmp_path):
    config = train_config_file(run={"epochs": 2, "iterations_per_epoch": 4})
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _cli("train", "--config", str(config), "--set", f"run.out_dir={reference}")
    expected = _losses(reference)
    assert len(expected) == 8

    command = [sys.executable, "-m", "cleanpose", "--quiet", "train", "--config", str(config), "--set",
               f"run.out_dir={killed}"]  # fmt: skip
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "losses.jsonl"
    deadline = time.monotonic() + 240
    while (not log.exists() or len(log.read_text().splitlines()) < 6) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = read_checkpoint(killed / "checkpoints/last.pt")["step"]
    assert 5 <= stopped_at < 8  # inside the second epoch (steps 5..8); the log may run one step ahead

    _cli("train", "--config", str(config), "--set", f"run.out_dir={killed}", "--resume")
    _assert_losses_close(_losses(killed), expected, rel=1e-6)
    final = read_checkpoint(killed / "checkpoints/last.pt")
    torch.testing.assert_close(final["queue"], read_checkpoint(reference / "checkpoints/last.pt")["queue"])


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(train_config_file, tmp_path):
    config = load_config(train_config_file(run={"epochs": 1, "iterations_per_epoch": 1}), TrainConfig)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(config, resume=True, quiet=True)
    train(config, quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(config, quiet=True)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert load_config(tmp_path / "run" / "config.yaml", TrainConfig) == config, saved


def test_unwritable_or_full_output_fails_before_training(train_config_file, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    config = load_config(train_config_file(run={"out_dir": str(blocker / "run")}), TrainConfig)
    with pytest.raises(OutputError, match="not writable"):
        train(config, quiet=True)

    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    config = load_config(train_config_file(), TrainConfig)
    with pytest.raises(OutputError, match="MiB free"):
        train(config, quiet=True)
    assert not (tmp_path / "run" / "losses.jsonl").exists()


def test_config_errors_list_valid_keys(train_config_file):
    path = train_config_file()
    with pytest.raises(ConfigError, match="checkpoint_every") as error:
        load_config(path, TrainConfig, overrides=["run.checkpoint_evry=3"])
    assert "log_every" in str(error.value)
    done = subprocess.run([sys.executable, "-m", "cleanpose", "train", "--config", str(path), "--set", "run.seed=abc"],
                          env=ENV, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "run.seed" in done.stderr and "Traceback" not in done.stderr


def test_loss_log_and_tensorboard_and_curve(train_config_file, tmp_path):
    config = load_config(train_config_file(run={"epochs": 1, "iterations_per_epoch": 3}), TrainConfig)
    train(config, quiet=True)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3]
    for record in records:
        terms = {key[5:]: value for key, value in record.items() if key.startswith("loss/") and key != "loss/total"}
        weights = config.loss
        expected_total = (weights.pose_weight * terms["pose"] + weights.nocs_weight * terms["nocs"]
                          + weights.keypoint_coverage_weight * terms["keypoint_coverage"]
                          + weights.diversity_weight * terms["diversity"]
                          + weights.reconstruction_weight * terms["reconstruction"]
                          + weights.delta_weight * terms["delta"])  # fmt: skip
        assert math.isclose(record["loss/total"], expected_total, rel_tol=1e-5)
        assert "distillation" not in terms  # teacher: none -> no distillation term
    # CyclicLR triangular 1e-3 .. 5e-3, step 4: lr after step s is 1e-3 + 4e-3 * s / 4.
    assert [record["lr"] for record in records] == pytest.approx([2e-3, 3e-3, 4e-3])
    assert (run / "loss_curve.png").stat().st_size > 1000
    assert any(path.name.startswith("events.out.tfevents") for path in (run / "tensorboard").iterdir())


@pytest.mark.parametrize("rgb_backbone", ["dino", "resnet"])
def test_bf16_autocast_step_tracks_the_fp32_step(train_config_file, tmp_path, rgb_backbone):
    # Same seed and data: the first step's losses under bf16 autocast stay within 10 % or 0.0025 (bf16 keeps 8 bits).
    losses = {}
    for precision in ("fp32", "bf16"):
        model = {**TINY_MODEL, "rgb_backbone": rgb_backbone, "rgb": {**TINY_MODEL["rgb"], "psp_channels": 16}}
        path = train_config_file(
            name=f"{precision}.yaml",
            model=model,
            data={"image_size": 56},
            run={"epochs": 1, "iterations_per_epoch": 1, "precision": precision, "out_dir": str(tmp_path / precision)},
        )
        train(load_config(path, TrainConfig), quiet=True)
        losses[precision] = json.loads((tmp_path / precision / "losses.jsonl").read_text().splitlines()[0])
    for key, value in losses["fp32"].items():
        if key.startswith("loss/"):
            assert losses["bf16"][key] == pytest.approx(value, rel=0.1, abs=2.5e-3), key


def test_a_kept_checkpoint_equals_the_end_of_the_shorter_run(train_config_file, tmp_path):
    # Ablations at matched steps compare a long run's kept checkpoint of step 3 with 3-step runs: the
    # 2-epoch run must pass through exactly the state the 1-epoch run ends with.
    config = train_config_file(run={"epochs": 2, "iterations_per_epoch": 3, "checkpoint_every": 2, "keep_every": 3})
    short = load_config(config, TrainConfig, overrides=[f"run.out_dir={tmp_path / 'short'}", "run.epochs=1"])
    train(short, quiet=True)
    train(load_config(config, TrainConfig), quiet=True)
    kept = sorted(path.name for path in (tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_000003.pt", "step_000006.pt"]
    expected = read_checkpoint(tmp_path / "short" / "checkpoints" / "last.pt")
    actual = read_checkpoint(tmp_path / "run" / "checkpoints" / "step_000003.pt")
    assert actual["step"] == expected["step"] == 3
    torch.testing.assert_close(actual["queue"], expected["queue"], rtol=0, atol=0)
    for key, value in expected["model"].items():
        torch.testing.assert_close(actual["model"][key], value, rtol=0, atol=0, msg=key)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 6
