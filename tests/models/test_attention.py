"""Tests of the shared pre-norm attention blocks, plus key-map helpers used by the other model tests."""

import csv
import math
import re
from pathlib import Path

import torch

from cleanpose.models.attention import (
    AttentionBlock,
    AttentionLayer,
    SelfAttentionBlock,
    SelfAttentionLayer,
    attention_layer_key_map,
    self_attention_layer_key_map,
)

# The saved keys of the reference state dict with their shapes (tests/models/reference_state_dict_keys.tsv).
KEY_TABLE = Path(__file__).with_name("reference_state_dict_keys.tsv")


# ----------------------------------------------------------------------------------------------------------
# helpers shared by tests/models/test_*.py


def _template(pattern: str) -> str:
    """Turn a key-map pattern (only `\\.` and `(\\d+)` as regex syntax) into a substitution template."""
    counter = iter(range(1, 100))
    return re.sub(r"\(\\d\+\)", lambda _: f"\\{next(counter)}", pattern).replace("\\.", ".")


def rename_key(key: str, key_map, *, to_reference: bool = True) -> str:
    """Apply the first matching key-prefix pair; unmatched keys keep their name."""
    for ours, reference in key_map:
        source, target = (ours, reference) if to_reference else (reference, ours)
        match = re.match(source, key)
        if match:
            return match.expand(_template(target)) + key[match.end() :]
    return key


def reference_rows(prefix: str, config: str = "camera_real") -> dict[str, tuple[int, ...]]:
    """Rows of the reference key table under `prefix.` -> shape, with `config`-specific rows overriding."""
    rows: dict[str, tuple[int, ...]] = {}
    with KEY_TABLE.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if not row["key"].startswith(prefix + ".") or row["config"] not in ("camera_real", config):
                continue
            if row["config"] == "camera_real" and row["key"] in rows:
                continue
            shape = () if row["shape"] == "scalar" else tuple(int(d) for d in row["shape"].split("x"))
            rows[row["key"]] = shape
    return rows


def check_reference_keys(module: torch.nn.Module, key_map, prefix: str, config: str = "camera_real") -> None:
    """The renamed state dict equals the reference table under `prefix`, and renaming back is exact."""
    ours = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    renamed = {f"{prefix}.{rename_key(key, key_map)}": shape for key, shape in ours.items()}
    assert len(renamed) == len(ours)
    assert renamed == reference_rows(prefix, config)
    back = {rename_key(key[len(prefix) + 1 :], key_map, to_reference=False) for key in renamed}
    assert back == set(ours)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-10, rtol: float = 1e-10) -> None:
    """allclose that reports the largest difference and where it is."""
    difference = (actual.double() - expected.double()).abs()
    tolerance = atol + rtol * expected.double().abs()
    worst = int(torch.argmax(difference - tolerance))
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert bool((difference <= tolerance).all()), (
        f"max |diff| {difference.max().item():.3e} at flat index {worst}: "
        f"{actual.flatten()[worst].item()} vs {expected.flatten()[worst].item()}"
    )


def check_all_parameters_get_gradients(module: torch.nn.Module, loss: torch.Tensor) -> None:
    loss.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert bool(parameter.grad.abs().sum() > 0), name


# ----------------------------------------------------------------------------------------------------------
# float64 oracles written out from the definitions


def oracle_multihead(attention: torch.nn.MultiheadAttention, query, key, value) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_h) V per head with the packed projections, then out_proj; explicit loops over heads."""
    model_dim, heads = attention.embed_dim, attention.num_heads
    head_dim = model_dim // heads
    weight, bias = attention.in_proj_weight.double(), attention.in_proj_bias.double()
    q = query @ weight[:model_dim].T + bias[:model_dim]
    k = key @ weight[model_dim : 2 * model_dim].T + bias[model_dim : 2 * model_dim]
    v = value @ weight[2 * model_dim :].T + bias[2 * model_dim :]
    outputs = []
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[..., part] @ k[..., part].transpose(-1, -2) / math.sqrt(head_dim)
        scores = scores - scores.max(dim=-1, keepdim=True).values
        weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)
        outputs.append(weights @ v[..., part])
    merged = torch.cat(outputs, dim=-1)
    return merged @ attention.out_proj.weight.double().T + attention.out_proj.bias.double()


def oracle_layer_norm(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + norm.eps) * norm.weight.double() + norm.bias.double()


def oracle_ffn(ffn: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    hidden = torch.clamp(x @ ffn[0].weight.double().T + ffn[0].bias.double(), min=0)
    return hidden @ ffn[3].weight.double().T + ffn[3].bias.double()


def oracle_attention_block(block: AttentionBlock, queries, memory) -> torch.Tensor:
    normed = oracle_layer_norm(block.norm_cross, queries)
    queries = queries + oracle_multihead(block.cross_attention, normed, memory, memory)
    normed = oracle_layer_norm(block.norm_self, queries)
    queries = queries + oracle_multihead(block.self_attention, normed, normed, normed)
    return queries + oracle_ffn(block.ffn, oracle_layer_norm(block.norm_ffn, queries))


def oracle_self_attention_block(block: SelfAttentionBlock, tokens) -> torch.Tensor:
    normed = oracle_layer_norm(block.norm_self, tokens)
    tokens = tokens + oracle_multihead(block.self_attention, normed, normed, normed)
    return tokens + oracle_ffn(block.ffn, oracle_layer_norm(block.norm_ffn, tokens))


def randomize_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give LayerNorm / BatchNorm non-trivial affine parameters and statistics so the oracles test them."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (torch.nn.LayerNorm, torch.nn.BatchNorm1d)):
                sub.weight.copy_(1 + 0.3 * torch.randn(sub.weight.shape, generator=generator))
                sub.bias.copy_(0.3 * torch.randn(sub.bias.shape, generator=generator))
            if isinstance(sub, torch.nn.BatchNorm1d):
                sub.running_mean.copy_(0.2 * torch.randn(sub.running_mean.shape, generator=generator))
                sub.running_var.copy_(0.5 + torch.rand(sub.running_var.shape, generator=generator))
            if isinstance(sub, torch.nn.MultiheadAttention):
                sub.in_proj_bias.copy_(0.2 * torch.randn(sub.in_proj_bias.shape, generator=generator))
                sub.out_proj.bias.copy_(0.2 * torch.randn(sub.out_proj.bias.shape, generator=generator))


# ----------------------------------------------------------------------------------------------------------


def test_attention_block_matches_float64_oracle():
    generator = torch.Generator().manual_seed(0)
    block = AttentionBlock(model_dim=16, num_heads=4, ffn_dim=8)
    randomize_norms(block, generator)
    block.double().eval()
    queries = torch.randn(2, 5, 16, generator=generator, dtype=torch.float64)
    memory = 3 * torch.randn(2, 7, 16, generator=generator, dtype=torch.float64)
    assert_close(block(queries, memory), oracle_attention_block(block, queries, memory))


def test_self_attention_block_matches_float64_oracle():
    generator = torch.Generator().manual_seed(1)
    block = SelfAttentionBlock(model_dim=16, num_heads=2, ffn_dim=12)
    randomize_norms(block, generator)
    block.double().eval()
    tokens = torch.randn(3, 6, 16, generator=generator, dtype=torch.float64)
    assert_close(block(tokens), oracle_self_attention_block(block, tokens))


def test_memory_is_not_normalised():
    # Scaling the memory changes the output: a normalised memory would make it scale-invariant.
    generator = torch.Generator().manual_seed(2)
    block = AttentionBlock(model_dim=8, num_heads=2, ffn_dim=8).double().eval()
    queries = torch.randn(1, 3, 8, generator=generator, dtype=torch.float64)
    memory = torch.randn(1, 4, 8, generator=generator, dtype=torch.float64)
    assert_close(block(queries, memory), oracle_attention_block(block, queries, memory))
    assert not torch.allclose(block(queries, memory), block(queries, 5 * memory))


def test_layers_chain_their_blocks():
    generator = torch.Generator().manual_seed(3)
    layer = AttentionLayer(num_blocks=3, model_dim=8, num_heads=2, ffn_dim=8).double().eval()
    self_layer = SelfAttentionLayer(num_blocks=2, model_dim=8, num_heads=4, ffn_dim=4).double().eval()
    queries = torch.randn(2, 4, 8, generator=generator, dtype=torch.float64)
    memory = torch.randn(2, 9, 8, generator=generator, dtype=torch.float64)
    expected, expected_self = queries, queries
    for block in layer.blocks:
        expected = oracle_attention_block(block, expected, memory)
    for block in self_layer.blocks:
        expected_self = oracle_self_attention_block(block, expected_self)
    assert_close(layer(queries, memory), expected)
    assert_close(self_layer(queries), expected_self)


def test_float32_matches_float64_and_gradients_reach_all_parameters():
    generator = torch.Generator().manual_seed(4)
    layer = AttentionLayer(num_blocks=2, model_dim=16, num_heads=4, ffn_dim=8)
    queries = torch.randn(2, 5, 16, generator=generator)
    memory = torch.randn(2, 7, 16, generator=generator)
    expected = queries.double()
    for block in layer.blocks:
        expected = oracle_attention_block(block, expected, memory.double())
    output = layer(queries, memory)
    assert_close(output, expected, atol=1e-5, rtol=1e-5)
    check_all_parameters_get_gradients(layer, (output * torch.randn(output.shape, generator=generator)).sum())


def test_key_maps_follow_reference_names():
    layer = torch.nn.Module()
    layer.attention_layer = AttentionLayer(num_blocks=2, model_dim=8, num_heads=2, ffn_dim=8)
    layer.self_layer = SelfAttentionLayer(num_blocks=1, model_dim=8, num_heads=2, ffn_dim=8)
    key_map = attention_layer_key_map(r"attention_layer\.", r"attn_layer\.") + self_attention_layer_key_map(
        r"self_layer\.", r"self_attn_layer\."
    )
    renamed = {rename_key(key, key_map) for key in layer.state_dict()}
    expected = set()
    for block in range(2):
        prefix = f"attn_layer.attn_blocks.{block}."
        for part in ("multihead_attn", "self_attn"):
            expected |= {prefix + f"{part}.in_proj_weight", prefix + f"{part}.in_proj_bias"}
            expected |= {prefix + f"{part}.out_proj.weight", prefix + f"{part}.out_proj.bias"}
        for part in ("norm1", "norm2", "norm3", "ffn.0", "ffn.3"):
            expected |= {prefix + f"{part}.weight", prefix + f"{part}.bias"}
    prefix = "self_attn_layer.attn_blocks.0."
    expected |= {
        prefix + f"self_attn.{name}" for name in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    }
    for part in ("norm1", "norm2", "ffn.0", "ffn.3"):
        expected |= {prefix + f"{part}.weight", prefix + f"{part}.bias"}
    assert renamed == expected
    assert {rename_key(key, key_map, to_reference=False) for key in renamed} == set(layer.state_dict())


def test_eval_forward_is_deterministic():
    generator = torch.Generator().manual_seed(5)
    layer = AttentionLayer(num_blocks=1, model_dim=8, num_heads=2, ffn_dim=8, dropout=0.5).eval()
    queries = torch.randn(2, 3, 8, generator=generator)
    memory = torch.randn(2, 4, 8, generator=generator)
    with torch.no_grad():
        assert torch.equal(layer(queries, memory), layer(queries, memory))
