"""Each fast path against the plain path: fused attention, float32 geometry under bf16 autocast, fused Adam."""

import pytest
import torch

from cleanpose.config import TrainConfig, load_config
from cleanpose.engine.train import build_optimizer
from cleanpose.models.attention import AttentionBlock, SelfAttentionBlock, set_fused_attention
from cleanpose.models.distillation import PointBERTTeacher
from cleanpose.ops.knn import squared_distances
from tests.models.test_net import _batch, _queue_idx, _tiny_model


def _max_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max()) if a.numel() else 0.0


@pytest.mark.parametrize("block_type", [AttentionBlock, SelfAttentionBlock])
def test_fused_attention_blocks_compute_the_explicit_function(block_type):
    torch.manual_seed(0)
    block = block_type(model_dim=16, num_heads=4, ffn_dim=24).double()
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(3, 5, 16, generator=generator, dtype=torch.float64)
    memory = torch.randn(3, 7, 16, generator=generator, dtype=torch.float64)
    inputs = (queries, memory) if block_type is AttentionBlock else (queries,)
    with torch.no_grad():
        explicit = block(*inputs)
        set_fused_attention(block, True)
        assert block.use_fused_attention
        fused = block(*inputs)
    assert _max_relative(fused, explicit) < 1e-12  # float64: the same function, rounding apart


def test_fused_attention_in_the_teacher():
    torch.manual_seed(0)
    teacher = PointBERTTeacher(trans_dim=24, depth=2, num_heads=3, num_groups=8, group_size=4, encoder_dims=16,
                               mode="eval").double()  # fmt: skip
    points = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.1
    with torch.no_grad():
        explicit = teacher(points)
        set_fused_attention(teacher, True)
        assert all(block.attn.use_fused_attention for block in teacher.blocks)
        assert _max_relative(teacher(points), explicit) < 1e-12


def test_fused_attention_whole_net_eval_outputs():
    model = _tiny_model().eval()
    batch = _batch()
    with torch.no_grad():
        explicit = model(batch, _queue_idx())
        set_fused_attention(model, True)
        fused = model(batch, _queue_idx())
    for key in ("pred_rotation", "pred_translation", "pred_size", "pred_kpt_3d"):
        assert _max_relative(fused[key], explicit[key]) < 1e-5, key


def test_squared_distances_keep_the_input_dtype_under_autocast():
    generator = torch.Generator().manual_seed(4)
    query, points = torch.rand(2, 5, 3, generator=generator), torch.rand(2, 9, 3, generator=generator)
    plain = squared_distances(query, points, "expanded")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = squared_distances(query, points, "expanded")
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, plain)


def test_bf16_training_forward_keeps_coordinates_in_float32():
    """Under bf16 autocast the point ops and the pose outputs see float32 coordinates (not bf16)."""
    model = _tiny_model().train()
    seen = {}

    def record(module, args):
        seen["points"] = args[0].dtype

    model.point_encoder.register_forward_pre_hook(record)
    generator = torch.Generator().manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(_batch(train_shape=True), generator=generator, update_queue=False)
    assert seen["points"] == torch.float32
    for key in ("local_kpt_3d", "pred_kpt_3d", "pred_translation", "pred_rotation", "recon_model"):
        assert outputs[key].dtype == torch.float32, key
    # The float32 keypoints are the heat map's weighted mean of the float32 augmented points.
    plain_generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        reference = model(_batch(train_shape=True), generator=plain_generator, update_queue=False)
    assert _max_relative(outputs["pred_translation"], reference["pred_translation"]) < 0.2


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_adam_matches_the_default_adam():
    config = load_config({}, TrainConfig)
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 32).cuda()
        config_fused = load_config({"optim": {"fused": fused}}, TrainConfig)
        optimizer, _ = build_optimizer(model, config_fused)
        assert bool(optimizer.defaults.get("fused")) == fused
        for step in range(3):
            torch.manual_seed(step)
            loss = model(torch.randn(8, 64, device="cuda")).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert config.optim.fused
    assert _max_relative(results[1], results[0]) < 1e-6
