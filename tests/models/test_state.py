"""Tests of cleanpose.models.state: the safe file reader and the strict state-dict loader."""

import argparse

import pytest
import torch
from torch import nn

from cleanpose.errors import CheckpointError
from cleanpose.models.state import format_keys, load_file, load_state_strict, unwrap_state_dict


class Pickled:
    """A class the safe unpickler does not know."""


def _module():
    torch.manual_seed(0)  # test-side seeding of the default init
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_load_file_reads_torch_and_safetensors_files(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "w.pth")
    loaded = load_file(tmp_path / "w.pth", "weights file")
    assert loaded["epoch"] == 3 and all(torch.equal(loaded["state_dict"][k], v) for k, v in state.items())
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "w.safetensors"))
    loaded = load_file(tmp_path / "w.safetensors", "weights file")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_load_file_refuses_missing_and_unsafe_files_naming_them(tmp_path):
    with pytest.raises(CheckpointError, match=r"none.pt: queue file not found; write one with 'cleanpose queue'$"):
        load_file(tmp_path / "none.pt", "queue file", hint="write one with 'cleanpose queue'")
    torch.save({"object": Pickled()}, tmp_path / "unsafe.pt")
    refused = r"(?s)unsafe.pt: cannot be read with weights_only=True \(.*test_state.Pickled"
    with pytest.raises(CheckpointError, match=refused):
        load_file(tmp_path / "unsafe.pt", "checkpoint")
    (tmp_path / "corrupt.pt").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match=r"corrupt.pt: cannot be read with weights_only=True"):
        load_file(tmp_path / "corrupt.pt", "checkpoint")
    # Classes named in allowed_globals are rebuilt (the ULIP files hold an argparse.Namespace).
    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "args.pt")
    with pytest.raises(CheckpointError, match="cannot be read with weights_only=True"):
        load_file(tmp_path / "args.pt", "checkpoint")
    assert load_file(tmp_path / "args.pt", "checkpoint", allowed_globals=[argparse.Namespace])["args"].lr == 0.1


def test_unwrap_state_dict():
    weight = torch.zeros(2)
    assert unwrap_state_dict({"module.a": weight, "b": weight}, "f")
    assert list(unwrap_state_dict({"state_dict": {"module.a": weight}}, "f")) == ["a"]
    assert list(unwrap_state_dict({"model": {"a": weight}, "step": 3}, "f")) == ["a"]
    for bad, found in (([1], "list"), ({}, "an empty mapping"), ({"a": 1}, "a mapping with non-tensor entries")):
        with pytest.raises(CheckpointError, match=rf"^f: expected a state dict of tensors; got {found} \(a bare"):
            unwrap_state_dict(bad, "f")


def test_load_state_strict_loads_a_matching_state():
    source, target = _module(), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        source[1].running_mean.copy_(torch.arange(4.0))
    load_state_strict(source.state_dict(), target, "f.pth")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_load_state_strict_lists_every_missing_and_extra_key_before_loading():
    target = _module()
    before = {key: value.clone() for key, value in target.state_dict().items()}
    state = {key: torch.ones_like(value) for key, value in target.state_dict().items()}
    del state["0.bias"], state["1.running_var"]
    state["2.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError,
        match=r"^f.pth: state dict does not match the network; missing keys: 0.bias, 1.running_var; "
        r"unexpected keys: 2.weight$",
    ):
        load_state_strict(state, target, "f.pth")
    assert all(torch.equal(target.state_dict()[key], value) for key, value in before.items())  # nothing loaded
    # Custom wording, the key names shown in the file's own naming, and a mapping of shapes only.
    expected = {key: value.shape for key, value in target.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"^r.pth: weights file does not match the reference \(cat_num=3\); missing keys: ref.0.bias, "
        r"ref.1.running_var; unknown keys: ref.2.weight$",
    ):
        load_state_strict(
            state,
            expected,
            "r.pth",
            what="weights file",
            target="the reference (cat_num=3)",
            extra_word="unknown",
            display=lambda key: "ref." + key,
        )


def test_load_state_strict_lists_shape_mismatches_and_cuts_long_lists():
    target = _module()
    state = dict(target.state_dict(), **{"0.weight": torch.zeros(4, 2), "1.bias": torch.zeros(5)})
    with pytest.raises(
        CheckpointError,
        match=r"^f.pth: shape mismatch \(file vs module\): 0.weight \(4, 2\) vs \(4, 3\); 1.bias \(5,\) vs \(4,\)$",
    ):
        load_state_strict(state, target, "f.pth", shapes="file vs module")
    keys = [f"k{i:02d}" for i in range(15)]
    assert format_keys(reversed(keys)) == ", ".join(keys[:12]) + ", ... (3 more)"
