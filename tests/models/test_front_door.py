"""Tests of the front-door encoder and the confounder queue."""

import numpy as np
import pytest
import torch

from cleanpose.config import AttentionConfig, FrontDoorConfig
from cleanpose.errors import CheckpointError, ConfigError
from cleanpose.models.front_door import ConfounderQueue, FrontDoorEncoder, reference_key_map
from tests.models.test_attention import (
    assert_close,
    check_all_parameters_get_gradients,
    check_reference_keys,
    oracle_attention_block,
    oracle_layer_norm,
    oracle_self_attention_block,
    randomize_norms,
)


def _tiny_encoder():
    return FrontDoorEncoder(model_dim=16, cross_blocks=2, cross_heads=4, cross_ffn_dim=8, self_blocks=1,
                            self_heads=2, self_ffn_dim=12)  # fmt: skip


def test_reference_sizes_parameter_count_and_keys():
    encoder = FrontDoorEncoder()
    assert sum(p.numel() for p in encoder.parameters()) == 3_561_986
    assert len(encoder.state_dict()) == 106
    check_reference_keys(encoder, reference_key_map(), "FD_Encoder")


def test_encoder_matches_float64_oracle():
    generator = torch.Generator().manual_seed(0)
    encoder = _tiny_encoder()
    randomize_norms(encoder, generator)
    encoder.double().eval()
    local = torch.randn(2, 6, 16, generator=generator, dtype=torch.float64)
    confounders = torch.randn(2, 3, 16, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        output = encoder(local, confounders)

        def linear(layer, x):
            return x @ layer.weight.T + layer.bias

        branch = linear(encoder.local_projection, local)
        for block in encoder.self_attention_layer.blocks:
            branch = oracle_self_attention_block(block, branch)
        cross = linear(encoder.global_projection, local)
        for block in encoder.cross_attention_layer.blocks:
            cross = oracle_attention_block(block, cross, confounders)
        final = oracle_layer_norm(encoder.norm, branch + cross)
        gate = 1 / (1 + torch.exp(-(linear(encoder.intervened_gate, final) + linear(encoder.original_gate, local))))
        expected = gate * final + (1 - gate) * local
    assert_close(output, expected)


def test_encoder_gradients_float32_and_determinism():
    generator = torch.Generator().manual_seed(1)
    encoder = _tiny_encoder()
    local = torch.randn(2, 6, 16, generator=generator)
    confounders = torch.randn(2, 3, 16, generator=generator)
    output = encoder(local, confounders)
    reference = _tiny_encoder().double()
    reference.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        assert_close(output, reference(local.double(), confounders.double()), atol=1e-5, rtol=1e-5)
    check_all_parameters_get_gradients(encoder, (output * torch.randn(output.shape, generator=generator)).sum())
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder(local, confounders), encoder(local, confounders))


def test_encoder_from_config():
    config = FrontDoorConfig(
        model_dim=8,
        cross_attention=AttentionConfig(num_blocks=3, model_dim=8, num_heads=2, ffn_dim=5),
        self_attention=AttentionConfig(num_blocks=1, model_dim=8, num_heads=4, ffn_dim=6),
    )
    encoder = FrontDoorEncoder.from_config(config)
    assert len(encoder.cross_attention_layer.blocks) == 3 and len(encoder.self_attention_layer.blocks) == 1
    assert encoder.cross_attention_layer.blocks[0].ffn[0].out_features == 5
    assert encoder.self_attention_layer.blocks[0].self_attention.num_heads == 4
    with pytest.raises(ConfigError, match="front_door.cross_attention.model_dim 256 differs"):
        FrontDoorEncoder.from_config(FrontDoorConfig(model_dim=8))


# ----------------------------------------------------------------------------------------------------------
# confounder queue


def _filled_queue(num_categories=3, length=5, dim=4, seed=0):
    queue = ConfounderQueue(num_categories, length, dim)
    generator = torch.Generator().manual_seed(seed)
    queue.fill(torch.randn(num_categories, length, dim, generator=generator))
    return queue


def test_unfilled_queue_refuses_to_draw():
    queue = ConfounderQueue(2, 4, 3)
    assert not queue.is_filled
    with pytest.raises(CheckpointError, match="confounder queue is missing"):
        queue.draw(2, random_state=np.random.RandomState(0))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 3\); expected \(2, 4, 3\)"):
        queue.fill(torch.zeros(2, 3, 3))


def test_state_dict_carries_the_queue_and_its_flag():
    queue = _filled_queue()
    state = queue.state_dict()
    assert set(state) == {"features", "filled"} and state["features"].dtype == torch.float32
    restored = ConfounderQueue(3, 5, 4)
    restored.load_state_dict(state, strict=True)
    assert restored.is_filled
    index = torch.tensor([[0, 4], [1, 1], [3, 2]])
    assert torch.equal(restored.draw(2, queue_idx=index), queue.draw(2, queue_idx=index))
    restored.load_state_dict(ConfounderQueue(3, 5, 4).state_dict())
    assert not restored.is_filled
    with pytest.raises(CheckpointError, match="never filled"):
        restored.draw(2, queue_idx=index)


def test_flag_follows_a_state_dict_loaded_through_a_parent_module():
    parent, source = torch.nn.Module(), torch.nn.Module()
    parent.queue, source.queue = ConfounderQueue(3, 5, 4), _filled_queue()
    parent.load_state_dict(source.state_dict(), strict=True)
    assert parent.queue.is_filled
    assert torch.equal(parent.queue.features, source.queue.features)


def test_draw_with_explicit_indices():
    queue = _filled_queue()
    index = torch.tensor([[4, 0, 2], [1, 1, 3], [0, 3, 2]])
    drawn = queue.draw(3, queue_idx=index)
    for c in range(3):
        for j in range(3):
            assert torch.equal(drawn[c, j], queue.features[c, int(index[c, j])])
    with pytest.raises(ValueError, match=r"queue_idx has shape \(3, 2\); expected \(3, 3\)"):
        queue.draw(3, queue_idx=index[:, :2])
    with pytest.raises(ValueError, match=r"values span \[0, 5\]; expected indices in \[0, 5\)"):
        queue.draw(3, queue_idx=torch.where(index == 4, 5, index))
    with pytest.raises(ValueError, match=r"values span \[-1, 3\]"):
        queue.draw(3, queue_idx=torch.where(index == 4, -1, index))
    with pytest.raises(ValueError, match="dtype torch.float32; expected an integer"):
        queue.draw(3, queue_idx=index.float())


def test_draw_with_one_draw_per_object():
    queue = _filled_queue()
    index = torch.tensor([[[4, 0], [1, 1], [0, 3]], [[2, 2], [3, 0], [1, 4]]])  # (B=2, C=3, S=2)
    drawn = queue.draw(2, queue_idx=index)
    assert drawn.shape == (2, 3, 2, 4)
    for b in range(2):
        for c in range(3):
            for j in range(2):
                assert torch.equal(drawn[b, c, j], queue.features[c, int(index[b, c, j])])
    with pytest.raises(ValueError, match=r"queue_idx has shape \(2, 2, 2\); expected \(3, 2\)"):
        queue.draw(2, queue_idx=index[:, :2])
    with pytest.raises(ValueError, match=r"queue_idx has shape \(1, 2, 3, 2\)"):
        queue.draw(2, queue_idx=index[None])


def test_default_sampler_reproduces_the_reference_draw():
    queue = _filled_queue(num_categories=4, length=9)
    drawn = queue.draw(3, random_state=np.random.RandomState(7))
    # Legacy choice(Q, S, replace=False) is permutation(Q)[:S], one call per category in order.
    oracle_state = np.random.RandomState(7)
    for c in range(4):
        expected_index = oracle_state.permutation(9)[:3]
        assert torch.equal(drawn[c], queue.features[c, torch.from_numpy(expected_index)])
    with pytest.raises(ValueError, match=r"num_samples 10 must lie in \[1, 9\]"):
        queue.draw(10, random_state=np.random.RandomState(0))


def test_default_sampler_falls_back_to_numpys_global_state():
    queue = _filled_queue(num_categories=2, length=6)
    saved = np.random.get_state()
    try:
        np.random.seed(42)  # what the reference's test.py does
        drawn = queue.draw(4)
        after = np.random.get_state()[1].copy()
    finally:
        np.random.set_state(saved)
    oracle_state = np.random.RandomState(42)
    index = torch.from_numpy(np.stack([oracle_state.permutation(6)[:4] for _ in range(2)]))
    assert torch.equal(drawn, queue.draw(4, queue_idx=index))
    assert np.array_equal(after, oracle_state.get_state()[1])


def _push_oracle(features, categories, pooled):
    lists = [[row.clone() for row in category] for category in features]
    for category, entry in zip(categories.tolist(), pooled):
        lists[category].pop(0)
        lists[category].append(entry.clone())
    return torch.stack([torch.stack(category) for category in lists])


@pytest.mark.parametrize(
    "categories",
    [
        [0, 2, 0, 1, 2, 2, 0],  # repeated categories in one batch
        [1, 1, 1, 1, 1, 1, 1],  # more entries of one category than the queue holds
        [2],
        [0, 1, 2, 1, 0, 0, 0, 0, 0, 1],
    ],
)
def test_push_matches_sequential_fifo(categories):
    queue = _filled_queue(length=5, dim=4)
    before = queue.features.clone()
    generator = torch.Generator().manual_seed(len(categories))
    pooled = torch.randn(len(categories), 4, generator=generator, requires_grad=True)
    category_tensor = torch.tensor(categories).view(-1, 1)  # the training label shape (B, 1)
    queue.push(category_tensor, pooled * 2)
    assert torch.equal(queue.features, _push_oracle(before, torch.tensor(categories), (pooled * 2).detach()))
    assert not queue.features.requires_grad


def test_push_twice_equals_one_push_of_the_concatenation():
    # A later issue all-gathers the pooled features of every rank before one push.
    first, second = _filled_queue(), _filled_queue()
    generator = torch.Generator().manual_seed(3)
    categories = torch.tensor([0, 2, 2, 1, 0, 2])
    pooled = torch.randn(6, 4, generator=generator)
    first.push(categories[:4], pooled[:4])
    first.push(categories[4:], pooled[4:])
    second.push(categories, pooled)
    assert torch.equal(first.features, second.features)


def test_push_rejects_mismatched_shapes():
    queue = _filled_queue()
    with pytest.raises(ValueError, match=r"pooled has shape \(2, 3\); expected \(2, 4\)"):
        queue.push(torch.tensor([0, 1]), torch.zeros(2, 3))


def test_queue_from_config():
    queue = ConfounderQueue.from_config(FrontDoorConfig(model_dim=8, queue_length=7, num_queue_samples=2,
                                                        cross_attention=AttentionConfig(model_dim=8),
                                                        self_attention=AttentionConfig(model_dim=8)), 3)  # fmt: skip
    assert queue.features.shape == (3, 7, 8)
