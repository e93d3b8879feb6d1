"""CUDA-graph replay of the eval forward against the eager forward (bit for bit), and its host-side logic."""

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cleanpose.config import TrainConfig, load_config
from cleanpose.errors import BackendUnavailableError, ConfigError
from cleanpose.models import CleanPoseNet
from cleanpose.models.cuda_graph import PRECISIONS, GraphedEvalForward, GraphKey, graph_key
from tests.models.test_net import CATEGORIES, IMAGE, NUM_POINTS, QUEUE, SAMPLES, _batch, _queue_idx, _tiny_model

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "nocs.yaml"
OBJECTS = (0, 2, 1, 2, 0)  # categories of a 5-object frame (tiny config: C = 3)
CUDA = torch.device("cuda")


def _to(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def _eager(model: CleanPoseNet, batch: dict, queue_idx: torch.Tensor, precision: str) -> dict:
    """The plain forward as the graph records it: inference mode, the precision's autocast (cache on)."""
    dtype = PRECISIONS[precision]
    autocast = contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)
    with torch.inference_mode(), autocast:
        return model(batch, queue_idx=queue_idx)


def _assert_identical(replayed: dict, eager: dict) -> None:
    assert replayed.keys() == eager.keys()
    for key, expected in eager.items():
        got = replayed[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        gap = float((got.double() - expected.double()).abs().max())
        assert torch.equal(got, expected), f"{key}: largest difference {gap:.3g}"


# ---------------------------------------------------------------------------------------------------
# CUDA: replay == eager
# ---------------------------------------------------------------------------------------------------


@pytest.mark.requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("per_object_draw", [False, True])
def test_tiny_net_replay_equals_the_eager_forward(precision, per_object_draw):
    model = _tiny_model().to(CUDA).eval()
    graphed = GraphedEvalForward(model)
    outputs = []
    for seed in (1, 2):
        batch = _batch(seed=seed, batch=len(OBJECTS), categories=OBJECTS)
        draws = [_queue_idx(seed * 10 + i) for i in range(len(OBJECTS) if per_object_draw else 1)]
        queue_idx = torch.stack(draws) if per_object_draw else draws[0]
        eager = _eager(model, _to(batch, CUDA), queue_idx, precision)
        # The second frame comes from the CPU (uploaded through pinned memory), the first from the GPU.
        replayed = graphed(_to(batch, CUDA) if seed == 1 else batch, queue_idx, precision=precision)
        outputs.append(replayed)
        _assert_identical({key: value.clone() for key, value in replayed.items()}, eager)
    dims = 3 if per_object_draw else 2
    assert graphed.keys == [GraphKey(len(OBJECTS), NUM_POINTS, IMAGE, IMAGE, precision, dims)]  # one capture
    assert outputs[0]["pred_rotation"] is outputs[1]["pred_rotation"]  # static outputs, overwritten per call


@pytest.fixture(scope="module")
def reference_size_models():
    """The reference-size net of configs/nocs.yaml (random DINOv2 ViT-S/14, fused attention) and its ResNet twin."""
    models = {}
    for backbone in ("dino", "resnet"):
        config = load_config(CONFIG, TrainConfig, overrides=[f"model.rgb_backbone={backbone}"]).model
        torch.manual_seed(0)
        model = CleanPoseNet(config, load_rgb_weights=False)
        generator = torch.Generator().manual_seed(1)
        model.queue.fill(torch.randn(model.queue.features.shape, generator=generator))
        models[backbone] = model.to(CUDA).eval()
    return models


def _reference_size_frame(seed: int, num_categories: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(5, 1024, 3, generator=generator) * 0.06 + torch.tensor([0.05, -0.1, 0.7])
    return {
        "rgb": torch.randn(5, 3, 224, 224, generator=generator),
        "pts": points,
        "choose": torch.randint(0, 224 * 224, (5, 1024), generator=generator),
        "category_label": torch.randint(0, num_categories, (5, 1), generator=generator),
    }


@pytest.mark.requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("backbone", ["dino", "resnet"])
def test_reference_size_replay_equals_the_eager_forward(reference_size_models, backbone, precision):
    model = reference_size_models[backbone]
    graphed = GraphedEvalForward(model)
    config = model.config
    for seed in (3, 4):
        batch = _to(_reference_size_frame(seed, config.num_categories), CUDA)
        queue_idx = model.queue.sample_indices(config.front_door.num_queue_samples, np.random.RandomState(seed))
        eager = _eager(model, batch, queue_idx, precision)
        if seed == 3:
            replayed = graphed(batch, queue_idx, precision=precision)  # warm-up and capture
        else:  # a replay: copy-in and replay read nothing back to the host
            torch.cuda.set_sync_debug_mode("error")
            try:
                replayed = graphed(batch, queue_idx, precision=precision)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        _assert_identical(replayed, eager)
    assert graphed.keys == [GraphKey(5, 1024, 224, 224, precision, 2)]


@pytest.mark.requires_cuda
@pytest.mark.parametrize("size", ["tiny", "dino", "resnet"])
def test_the_captured_forward_never_synchronises(reference_size_models, size):
    """The forward as captured (device inputs, device queue draw under trusted_indices): no host sync at all."""
    if size == "tiny":
        model, batch = _tiny_model().to(CUDA).eval(), _batch(batch=len(OBJECTS), categories=OBJECTS)
        queue_idx = _queue_idx()
    else:
        model = reference_size_models[size]
        batch = _reference_size_frame(5, model.config.num_categories)
        queue_idx = model.queue.sample_indices(model.config.front_door.num_queue_samples, np.random.RandomState(5))
    batch, queue_idx = _to(batch, CUDA), queue_idx.to(CUDA)
    batch["category_label"] = batch["category_label"].reshape(-1)
    eager = _eager(model, batch, queue_idx, "fp32")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with model.queue.trusted_indices():
            guarded = _eager(model, batch, queue_idx, "fp32")
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False), torch.inference_mode():
                model(batch, queue_idx=queue_idx)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _assert_identical(guarded, eager)


# ---------------------------------------------------------------------------------------------------
# CPU: keys, checks, the queue's trusted draw
# ---------------------------------------------------------------------------------------------------


def test_a_cpu_model_is_refused_with_a_clear_error():
    with pytest.raises(BackendUnavailableError, match="CUDA device.*cpu"):
        GraphedEvalForward(_tiny_model().eval())


def test_graph_key_of_each_call_shape():
    batch = _batch(batch=5, categories=OBJECTS)
    draw = _queue_idx()
    assert graph_key(batch, draw, "bf16") == (5, NUM_POINTS, IMAGE, IMAGE, "bf16", 2)
    per_object = torch.stack([draw] * 5)
    assert graph_key(batch, per_object, "fp32") == GraphKey(5, NUM_POINTS, IMAGE, IMAGE, "fp32", 3)
    labels_as_column = dict(batch, category_label=batch["category_label"].reshape(-1, 1).int())
    assert graph_key(labels_as_column, None, "fp16") == GraphKey(5, NUM_POINTS, IMAGE, IMAGE, "fp16", 0)
    wide = _batch(batch=2, categories=(0, 1))
    wide["rgb"] = torch.zeros(2, 3, 14, 42)
    assert graph_key(wide, draw, "fp32") == GraphKey(2, NUM_POINTS, 14, 42, "fp32", 2)


def test_graph_key_refuses_what_the_static_buffers_cannot_hold():
    batch = _batch()
    with pytest.raises(ConfigError, match="precision 'fp64' is unknown; valid: fp32, bf16, fp16"):
        graph_key(batch, None, "fp64")
    with pytest.raises(ValueError, match="pts has dtype torch.float64"):
        graph_key(dict(batch, pts=batch["pts"].double()), None, "fp32")
    with pytest.raises(ValueError, match="choose has dtype torch.float32; expected an integer"):
        graph_key(dict(batch, choose=batch["choose"].float()), None, "fp32")
    with pytest.raises(ValueError, match="queue_idx holds 2 per-object draws; the batch has 3"):
        graph_key(batch, torch.stack([_queue_idx()] * 2), "fp32")
    with pytest.raises(ValueError, match="lacks choose"):
        graph_key({key: value for key, value in batch.items() if key != "choose"}, None, "fp32")


def _expected_draw(features: torch.Tensor, queue_idx: torch.Tensor) -> torch.Tensor:
    """Brute force: out[c, j] = features[c, queue_idx[c, j]] (Python indexing, negatives from the end)."""
    rows = [[features[c, int(queue_idx[c, j])] for j in range(queue_idx.shape[1])] for c in range(features.shape[0])]
    return torch.stack([torch.stack(row) for row in rows])


def test_trusted_indices_skip_only_the_value_check_and_restore_it():
    queue = _tiny_model().queue
    queue_idx = _queue_idx()
    queue_idx[1, 2] = -1  # out of range: refused when checked, the last entry when trusted
    with pytest.raises(ValueError, match=r"span \[-1, "):
        queue.draw(SAMPLES, queue_idx=queue_idx)
    with queue.trusted_indices():
        drawn = queue.draw(SAMPLES, queue_idx=queue_idx)
        with pytest.raises(ValueError, match="queue_idx has shape"):  # shapes are still checked
            queue.draw(SAMPLES, queue_idx=queue_idx[:, :2])
    assert torch.equal(drawn, _expected_draw(queue.features, queue_idx))
    assert torch.equal(drawn[1, 2], queue.features[1, QUEUE - 1])
    with pytest.raises(ValueError, match="span"):
        queue.draw(SAMPLES, queue_idx=queue_idx)
    with pytest.raises(RuntimeError, match="inside"), queue.trusted_indices():
        raise RuntimeError("inside")
    with pytest.raises(ValueError, match="span"):  # restored after an exception too
        queue.draw(SAMPLES, queue_idx=queue_idx)


def test_check_indices_returns_int64_and_checks_values_on_request():
    queue = _tiny_model().queue
    queue_idx = _queue_idx().int()
    checked = queue.check_indices(queue_idx, SAMPLES)
    assert checked.dtype == torch.int64 and torch.equal(checked, queue_idx.long())
    too_high = queue_idx.clone()
    too_high[0, 0] = QUEUE
    with pytest.raises(ValueError, match=rf"expected indices in \[0, {QUEUE}\)"):
        queue.check_indices(too_high, SAMPLES)
    assert torch.equal(queue.check_indices(too_high, SAMPLES, values=False), too_high.long())
    assert CATEGORIES == queue.num_categories
