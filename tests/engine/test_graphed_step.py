"""The CUDA-graph training step (``run.cuda_graph``) against the eager step, and where it is not used."""

import json
import logging
import math

import pytest
import torch

from cleanpose.config import TrainConfig, load_config
from cleanpose.data.build import build_training_datasets
from cleanpose.engine.graphed_step import GraphedTrainStep, graph_unavailable_reason
from cleanpose.engine.train import Trainer, build_loss, build_optimizer, prepare_model, train
from cleanpose.models.checkpoint import read_checkpoint
from tests.engine.conftest import TINY_MODEL

# The reference-size network (every section at its default), random frozen DINOv2 or trainable ResNet, and
# the ULIP-2-sized PointBERT teacher in train mode (DropPath and batch statistics: the generator's draws).
REFERENCE_SIZE = {section: {} for section in TINY_MODEL if section != "rgb_backbone"} | {
    "rgb": {"random_init": True},
    "distillation": {"teacher": "pointbert", "teacher_mode": "train"},
}


def _run(train_config_file, tmp_path, name, *, cuda_graph, model=None, data=None, run=None):
    """Train the config written under ``name``; returns its checkpoint and per-step loss logs."""
    settings = {"out_dir": str(tmp_path / name), "cuda_graph": cuda_graph, **(run or {})}
    path = train_config_file(name=f"{name}.yaml", model=model or TINY_MODEL, data=data or {}, run=settings)
    train(load_config(path, TrainConfig), quiet=True)
    lines = (tmp_path / name / "losses.jsonl").read_text().splitlines()
    logs = [{key: value for key, value in json.loads(line).items() if key != "objects_per_s"} for line in lines]
    return read_checkpoint(tmp_path / name / "checkpoints" / "last.pt"), logs


def _assert_same_run(actual, expected) -> None:
    (checkpoint, logs), (expected_checkpoint, expected_logs) = actual, expected
    assert logs == expected_logs
    torch.testing.assert_close(checkpoint["queue"], expected_checkpoint["queue"], rtol=0, atol=0)
    assert checkpoint["model"].keys() == expected_checkpoint["model"].keys()
    for key, value in expected_checkpoint["model"].items():
        torch.testing.assert_close(checkpoint["model"][key], value, rtol=0, atol=0, msg=key)
    optimizer, expected_optimizer = checkpoint["optimizer"]["state"], expected_checkpoint["optimizer"]["state"]
    assert optimizer.keys() == expected_optimizer.keys()
    for index, state in expected_optimizer.items():
        for name, value in state.items():
            torch.testing.assert_close(optimizer[index][name], value, rtol=0, atol=0, msg=f"{index} {name}")


def _reference_size_config(train_config_file, name, rgb_backbone, precision, cuda_graph):
    path = train_config_file(
        name=f"{name}.yaml",
        model={**REFERENCE_SIZE, "rgb_backbone": rgb_backbone},
        data={"image_size": 224, "num_points": 1024, "images_per_epoch": [15, 5]},
        run={"device": "cuda", "precision": precision, "cuda_graph": cuda_graph, "iterations_per_epoch": 5},
    )
    return load_config(path, TrainConfig)


def _trainer(config) -> Trainer:
    device = torch.device(config.run.device)
    model = prepare_model(config, device)
    optimizer, scheduler = build_optimizer(model, config)
    return Trainer(config, model, build_loss(config).to(device), optimizer, scheduler,
                   build_training_datasets(config), device)  # fmt: skip


def _step_result(trainer: Trainer, losses: dict) -> dict:
    """A step's loss terms, gradients and buffers (BatchNorm statistics, queue), copied."""
    network = trainer.network
    return {
        "losses": {key: value.clone() for key, value in losses.items()},
        "grads": {name: p.grad.clone() for name, p in network.named_parameters() if p.grad is not None},
        "buffers": {name: value.clone() for name, value in network.state_dict().items() if "teacher" not in name},
    }


def _grad_gap(actual: dict, expected: dict) -> float:
    """‖actual − expected‖ / ‖expected‖ over all gradients together, in float64."""
    difference = sum(float((actual[name].double() - value.double()).square().sum()) for name, value in expected.items())
    norm = sum(float(value.double().square().sum()) for value in expected.values())
    return (difference / max(norm, 1e-300)) ** 0.5


@pytest.mark.requires_cuda
@pytest.mark.parametrize(("rgb_backbone", "precision"), [("dino", "fp32"), ("dino", "bf16"), ("resnet", "fp32"),
                                                         ("resnet", "bf16")])  # fmt: skip
def test_a_replayed_step_computes_the_eager_step(train_config_file, rgb_backbone, precision):
    # From the same state and batch, a replayed step and an eager step draw the same augmentation, DropPath
    # masks and queue entries, so their loss terms, BatchNorm statistics and pushed queue are equal bit for
    # bit. The gradients cannot be: CUDA's scatter/index backward accumulates with atomics, so two eager
    # backwards of the same step differ too (measured on an H100: 1e-4 to 3e-2 of a tensor's norm, and more for
    # the biases before a BatchNorm, whose gradient is ~0). The replay's gap to an eager backward must stay
    # within 3x the gap between two eager backwards (all gradients together).
    graphed = _trainer(_reference_size_config(train_config_file, "graph", rgb_backbone, precision, True))
    eager = _trainer(_reference_size_config(train_config_file, "eager", rgb_backbone, precision, False))
    loaders = graphed._loaders(0, 0)
    shards = [[[next(loader) for loader in loaders]] for _ in range(5)]
    for step in range(3):  # two eager warm-up steps, then the capture (and its first replay)
        graphed.step = step
        graphed.run_step(shards[step])
    assert graphed.graphed.graph is not None and graphed.graphed.eager_steps == 2
    for step in (3, 4):  # two replays: the generator is re-seeded per step
        state = {key: value.clone() for key, value in graphed.network.state_dict().items()}
        replayed = _step_result(graphed, graphed.graphed(shards[step][0], 0, step))
        runs = []
        for _ in range(2):
            eager.network.load_state_dict(state)
            eager.optimizer.zero_grad(set_to_none=True)
            runs.append(_step_result(eager, eager.forward_backward(shards[step], 0, step)))
        expected = runs[0]
        for part in ("losses", "buffers"):
            assert replayed[part].keys() == expected[part].keys()
            for key, value in expected[part].items():
                torch.testing.assert_close(replayed[part][key], value, rtol=0, atol=0, msg=f"step {step} {key}")
        assert replayed["grads"].keys() == expected["grads"].keys()
        gap, eager_gap = _grad_gap(replayed["grads"], expected["grads"]), _grad_gap(runs[1]["grads"], expected["grads"])
        assert gap <= max(3 * eager_gap, 1e-5), f"step {step}: gradient gap {gap:.2e}, eager vs eager {eager_gap:.2e}"
        graphed.network.load_state_dict(state)  # the replay's own result stays the run's state
        graphed.graphed(shards[step][0], 0, step)


@pytest.mark.requires_cuda
@pytest.mark.parametrize(("rgb_backbone", "precision"), [("dino", "fp32"), ("resnet", "bf16")])
def test_a_graphed_run_trains_like_the_eager_run(train_config_file, tmp_path, rgb_backbone, precision):
    # 6 steps through train(): 2 eager warm-up steps, the capture, 3 replays, with the loader's pin-memory
    # thread running during the capture; checkpoints and logs are written as usual. The first step's losses
    # equal the eager run's; later ones drift by the backward's atomics (amplified by Adam), so only finite.
    runs = {}
    for cuda_graph in (False, True):
        runs[cuda_graph] = _run(
            train_config_file,
            tmp_path,
            f"graph_{cuda_graph}",
            cuda_graph=cuda_graph,
            model={**REFERENCE_SIZE, "rgb_backbone": rgb_backbone},
            data={"image_size": 224, "num_points": 1024, "workers": 1},
            run={"device": "cuda", "precision": precision, "epochs": 2, "iterations_per_epoch": 3},
        )
    (checkpoint, logs), (_, expected_logs) = runs[True], runs[False]
    assert [log["step"] for log in logs] == [log["step"] for log in expected_logs] == [1, 2, 3, 4, 5, 6]
    assert checkpoint["step"] == 6
    assert logs[0] == expected_logs[0]
    assert all(math.isfinite(log["loss/total"]) for log in logs)


def test_cuda_graph_on_the_cpu_steps_eagerly_with_the_same_result(train_config_file, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cleanpose.engine.graphed_step"):
        graphed = _run(train_config_file, tmp_path, "on", cuda_graph=True)
    assert "run.cuda_graph is on but the device is cpu, not CUDA: training steps run eagerly" in caplog.text
    _assert_same_run(graphed, _run(train_config_file, tmp_path, "off", cuda_graph=False))


def test_graph_unavailable_reasons():
    def trainer(device, world_size=1, micro_batches=1):
        stub = Trainer.__new__(Trainer)
        stub.device, stub.world_size, stub.micro_batches = torch.device(device), world_size, micro_batches
        return stub

    assert graph_unavailable_reason(trainer("cpu")) == "the device is cpu, not CUDA"
    assert graph_unavailable_reason(trainer("cuda", world_size=2)) == "the run is distributed over 2 processes"
    assert graph_unavailable_reason(trainer("cuda", micro_batches=2)) == "run.micro_batches is 2"
    assert graph_unavailable_reason(trainer("cuda")) is None
    with pytest.raises(ValueError, match="GraphedTrainStep: the device is cpu, not CUDA"):
        GraphedTrainStep(trainer("cpu"))
