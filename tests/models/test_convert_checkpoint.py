"""Tests of cleanpose.models.convert_checkpoint against the reference key table (docs/model.md §16a).

``reference_state_dict_keys.tsv`` (next to this file) is the saved-key part of the spec's
``cleanpose_state_dict_keys.tsv``: every key of the reference ``Net.state_dict()`` with its shape, per RGB
backbone (``variant``) and config (housecat6d rows override camera_real ones).
"""

import io
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from cleanpose.cli import main
from cleanpose.config import ModelConfig
from cleanpose.errors import CheckpointError
from cleanpose.models import load_checkpoint
from cleanpose.models.convert_checkpoint import (
    convert_official_checkpoint,
    convert_to_official,
    infer_reference_config,
    load_reference_queue,
    load_reference_state_dict,
    official_to_ours,
    ours_to_official,
    reference_key_table,
)

TABLE = Path(__file__).with_name("reference_state_dict_keys.tsv")


def _reference_shapes(backbone: str, config: str) -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in TABLE.read_text().splitlines()[1:]]
    shapes = {}
    for key, shape, variant, which in rows:
        if variant in ("all", backbone) and (which == "camera_real" or which == config):
            shapes[key] = () if shape == "scalar" else tuple(int(n) for n in shape.split("x"))
    return shapes


def _reference_state(backbone: str, config: str = "camera_real") -> dict[str, torch.Tensor]:
    """A full reference state dict whose tensor i is filled with i (stride-0 views: no memory)."""
    state = {}
    for index, (key, shape) in enumerate(_reference_shapes(backbone, config).items()):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(index, dtype=torch.int64)
        else:
            state[key] = torch.tensor(float(index)).expand(shape)
    return state


@pytest.mark.parametrize(
    ("backbone", "config", "count"),
    [("dino", "camera_real", 750), ("resnet", "camera_real", 733), ("dino", "housecat6d", 750)],
)
def test_full_key_set_round_trip(backbone, config, count):
    reference = _reference_state(backbone, config)
    assert len(reference) == count
    model_config = infer_reference_config(reference)
    assert model_config.rgb_backbone == backbone
    assert model_config.num_categories == (10 if config == "housecat6d" else 6)
    ours = official_to_ours(reference, model_config)
    table = reference_key_table(model_config)
    # Each of our keys holds exactly the tensor of the reference key it maps to.
    for key, value in ours.items():
        assert value is reference[table[key]], key
    back = ours_to_official(ours, model_config)
    dropped = {key for key in reference if key.startswith("rgb_extractor.model.feats.fc.")}
    assert dropped == (
        set() if backbone == "dino" else {"rgb_extractor.model.feats.fc.weight", "rgb_extractor.model.feats.fc.bias"}
    )
    assert set(back) == set(reference) - dropped
    assert all(back[key] is reference[key] for key in back)
    # Spot checks of the naming, by hand from the reference code.
    inverse = {reference_key: key for key, reference_key in table.items()}
    assert inverse["IAKD.kpt_query"] == "keypoint_detector.keypoint_queries"
    assert inverse["pointnet2ulip"] == "distillation_head.projection"
    assert inverse["FD_Encoder.ln.weight"] == "front_door.norm.weight"
    if backbone == "dino":
        assert inverse["rgb_extractor.mask_token"] == "rgb_encoder.mask_token"
        assert inverse["feature_mlp.0.weight"] == "rgb_encoder.feature_projection.weight"


def test_strict_consumption_errors():
    reference = _reference_state("dino")
    config = infer_reference_config(reference)
    unknown = dict(reference, **{"ULIP_model.logit_scale": torch.tensor(1.0)})
    with pytest.raises(CheckpointError, match=r"unknown keys: ULIP_model.logit_scale"):
        official_to_ours(unknown, config)
    missing = {
        key: value
        for key, value in reference.items()
        if key not in ("rgb_extractor.mask_token", "GAFA.GAFA_blocks.0.fuse_mlp.1.num_batches_tracked")
    }
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: GAFA.GAFA_blocks.0.fuse_mlp.1.num_batches_tracked, rgb_extractor.mask_token$",
    ):
        official_to_ours(missing, config)
    housecat = ModelConfig.from_reference_yaml({"cat_num": 10, "NOCS_Predictor": {"cat_num": 10}})
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch \(reference vs config\): "
        r"nocs_predictor.atten_mlp.4.weight \(1152, 512, 1\) vs \(1920, 512, 1\)",
    ):
        official_to_ours(reference, housecat)
    resnet = _reference_state("resnet")
    with pytest.raises(CheckpointError, match=r"unknown keys: .*rgb_extractor.model.feats.fc.bias"):
        official_to_ours(resnet, config)  # dino config: fc is not droppable there, nor any ResNet key
    ours = official_to_ours(reference, config)
    with pytest.raises(CheckpointError, match=r"missing keys: pose_head.size_head.4.bias"):
        ours_to_official({k: v for k, v in ours.items() if k != "pose_head.size_head.4.bias"}, config)


def test_infer_reference_config_errors():
    with pytest.raises(CheckpointError, match=r"lacks nocs_predictor.atten_mlp.4.weight; cannot infer cat_num"):
        infer_reference_config({})
    with pytest.raises(CheckpointError, match=r"has 100 rows; expected a multiple of 3 x 64"):
        infer_reference_config({"nocs_predictor.atten_mlp.4.weight": torch.zeros(100, 512, 1)})


def _pickle_queue(entries, path, fake_cuda=False, monkeypatch=None):
    if fake_cuda:
        # Record every storage as living on cuda:0, as the reference's post-training pickle does.
        monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    with open(path, "wb") as handle:
        pickle.dump(entries, handle)
    if fake_cuda:
        monkeypatch.undo()


def test_queue_pickle_views_and_shapes(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    expected = torch.randn(2, 4, 8, generator=generator)
    # FIFO pushes store views into a (B, 1, D) batch tensor: each entry keeps the whole storage alive.
    batch = torch.zeros(3, 1, 8)
    entries = [[expected[c, q].reshape(1, 8).clone() for q in range(4)] for c in range(2)]
    batch[1, 0] = expected[1, 3]
    entries[1][3] = batch[1]
    path = tmp_path / "tensor_list.pkl"
    _pickle_queue(entries, path)
    queue = load_reference_queue(path)
    assert queue.dtype == torch.float32 and queue.is_contiguous()
    assert torch.equal(queue, expected)
    # (256,)-style entries (the HouseCat6D initial pickle) give the same tensor.
    _pickle_queue([[expected[c, q] for q in range(4)] for c in range(2)], path)
    assert torch.equal(load_reference_queue(path), expected)
    # A pickle written on a GPU machine: plain unpickling fails on a CPU-only machine, ours remaps.
    cuda_path = tmp_path / "cuda.pkl"
    _pickle_queue(entries, cuda_path, fake_cuda=True, monkeypatch=monkeypatch)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"CUDA"):
            with open(cuda_path, "rb") as handle:
                pickle.load(handle)
    assert torch.equal(load_reference_queue(cuda_path), expected)


def test_queue_pickle_errors(tmp_path):
    path = tmp_path / "bad.pkl"
    _pickle_queue([[torch.zeros(1, 8)] * 3, [torch.zeros(1, 8)] * 2], path)
    with pytest.raises(
        CheckpointError, match=r"per-category lists have lengths \[3, 2\]; expected one common non-zero length"
    ):
        load_reference_queue(path)
    _pickle_queue([[torch.zeros(2, 8)]], path)
    with pytest.raises(
        CheckpointError, match=r"entry \[0\]\[0\] is \(2, 8\); expected a tensor of shape \(1, D\) or \(D,\)"
    ):
        load_reference_queue(path)
    path.write_bytes(pickle.dumps([[io.StringIO()]]))
    with pytest.raises(CheckpointError, match=r"global '_io.StringIO' is not allowed in a queue pickle"):
        load_reference_queue(path)
    _pickle_queue({"a": 1}, path)
    with pytest.raises(CheckpointError, match=r"expected a list of per-category lists of tensors"):
        load_reference_queue(path)
    with pytest.raises(CheckpointError, match=r"nothing.pkl: queue pickle not found"):
        load_reference_queue(tmp_path / "nothing.pkl")


def test_reference_state_dict_layouts(tmp_path):
    state = {"a.weight": torch.ones(2), "module.b.bias": torch.zeros(1)}
    for name, payload in [
        ("bare.pth", state),
        ("wrapped.pth", {"state_dict": state, "epoch": 3}),
        ("model.pth", {"model": state}),
    ]:
        torch.save(payload, tmp_path / name)
        loaded = load_reference_state_dict(tmp_path / name)
        assert set(loaded) == {"a.weight", "b.bias"}
    torch.save({"epoch": 3}, tmp_path / "none.pth")
    with pytest.raises(CheckpointError, match=r"none.pth: expected a state dict of tensors"):
        load_reference_state_dict(tmp_path / "none.pth")


def test_convert_files_end_to_end(tmp_path, capsys):
    """Full-size resnet network (the reference's 733 keys) through the CLI, both directions."""
    shapes = _reference_shapes("resnet", "camera_real")
    generator = torch.Generator().manual_seed(0)
    reference = {}
    for index, (key, shape) in enumerate(shapes.items()):
        # A distinct constant per tensor identifies it after renaming (cheap to fill at full size).
        if key.endswith("num_batches_tracked"):
            reference[key] = torch.tensor(index)
        else:
            reference[key] = torch.full(shape, 1.0 + index * 1e-3)
    ref_path, out_path, back_path = tmp_path / "ref.pth", tmp_path / "ours.pth", tmp_path / "back.pth"
    torch.save(reference, ref_path)
    queue = torch.randn(6, 80, 256, generator=generator)
    queue_path = tmp_path / "tensor_list.pkl"
    _pickle_queue([[queue[c, q].reshape(1, 256).clone() for q in range(80)] for c in range(6)], queue_path)
    config_path = tmp_path / "camera_real.yaml"
    config_path.write_text(yaml.safe_dump({"pose_net": {"rgb_backbone": "resnet", "cat_num": 6, "select_num": 12}}))

    assert (
        main(
            [
                "convert-checkpoint",
                str(ref_path),
                str(out_path),
                "--config",
                str(config_path),
                "--queue",
                str(queue_path),
            ]
        )
        == 0
    )
    model = load_checkpoint(out_path)
    assert model.config.rgb_backbone == "resnet" and model.config.front_door.queue_length == 80
    assert torch.equal(model.queue.features, queue)
    assert torch.equal(model.state_dict()["keypoint_detector.keypoint_queries"], reference["IAKD.kpt_query"])
    assert torch.equal(
        model.state_dict()["rgb_encoder.upsample2.1.weight"], reference["rgb_extractor.model.up_2.conv.1.weight"]
    )

    queue_back = tmp_path / "queue_back.pkl"
    assert (
        main(["convert-checkpoint", str(out_path), str(back_path), "--from", "ours", "--queue", str(queue_back)]) == 0
    )
    back = torch.load(back_path, weights_only=True)
    assert set(back) == set(reference) - {"rgb_extractor.model.feats.fc.weight", "rgb_extractor.model.feats.fc.bias"}
    assert all(torch.equal(back[key], reference[key]) for key in back)
    assert torch.equal(load_reference_queue(queue_back), queue)

    # Errors come out as one line with exit status 2.
    wrong = tmp_path / "housecat.yaml"
    wrong.write_text(
        yaml.safe_dump({"pose_net": {"rgb_backbone": "resnet", "cat_num": 10, "NOCS_Predictor": {"cat_num": 10}}})
    )
    capsys.readouterr()
    assert main(["convert-checkpoint", str(ref_path), str(tmp_path / "x.pth"), "--config", str(wrong)]) == 2
    assert (
        "shape mismatch (reference vs config): nocs_predictor.atten_mlp.4.weight (1152, 512, 1) vs (1920, 512, 1)"
        in capsys.readouterr().err
    )
    assert (
        main(
            [
                "convert-checkpoint",
                str(ref_path),
                str(tmp_path / "y.pth"),
                "--queue",
                str(queue_path),
                "--config",
                str(wrong),
            ]
        )
        == 2
    )
    assert "queue has 6 categories of 256-d features; the network has cat_num 10" in capsys.readouterr().err
    assert (
        main(["convert-checkpoint", str(out_path), str(tmp_path / "z.pth"), "--from", "ours", "--config", str(wrong)])
        == 2
    )
    assert "--config applies to --from official only" in capsys.readouterr().err
    no_pose_net = tmp_path / "no_pose_net.yaml"
    no_pose_net.write_text("loss: {}\n")
    assert main(["convert-checkpoint", str(ref_path), str(tmp_path / "w.pth"), "--config", str(no_pose_net)]) == 2
    assert "no 'pose_net' section" in capsys.readouterr().err


def test_convert_without_queue(tmp_path):
    reference = _reference_state("resnet")
    reference = {key: value.clone() for key, value in reference.items()}  # materialise the stride-0 views
    torch.save(reference, tmp_path / "ref.pth")
    convert_official_checkpoint(tmp_path / "ref.pth", tmp_path / "ours.pth")
    checkpoint = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert checkpoint["queue"] is None and checkpoint["config"]["rgb_backbone"] == "resnet"
    with pytest.raises(CheckpointError, match=r"holds no queue; cannot write"):
        convert_to_official(tmp_path / "ours.pth", tmp_path / "back.pth", queue_path=tmp_path / "q.pkl")
