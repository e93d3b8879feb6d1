"""Weight files: configured path, torch hub cache, download from a (file://) URL, offline errors."""

import pytest
import torch

from cleanpose.config import ModelConfig, config_from_dict, config_to_dict
from cleanpose.errors import BackendUnavailableError, CheckpointError, ConfigError
from cleanpose.models import weights
from cleanpose.models.net import CleanPoseNet
from cleanpose.models.weights import WeightsFile, resolve_weights


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A private torch hub folder; returns its checkpoints/ folder."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def _spec(url=None):
    return WeightsFile("toy weights", "toy.pth", url, "https://example.org/toy")


def test_configured_file_then_cache_by_either_name(hub, tmp_path):
    given = tmp_path / "mine.pth"
    given.write_bytes(b"a")
    assert resolve_weights(_spec(), given) == given
    hub.mkdir(parents=True)
    (hub / "toy.pth").write_bytes(b"b")
    assert resolve_weights(_spec()) == hub / "toy.pth"
    assert resolve_weights(_spec(), tmp_path / "gone/toy.pth") == hub / "toy.pth"
    (hub / "other.pth").write_bytes(b"c")
    assert resolve_weights(_spec(), tmp_path / "gone/other.pth") == hub / "other.pth"


def test_download_from_a_file_url_into_the_cache(hub, tmp_path, capsys):
    source = tmp_path / "server" / "toy.pth"
    source.parent.mkdir()
    payload = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk
    source.write_bytes(payload)
    path = resolve_weights(_spec(source.as_uri()))
    assert path == hub / "toy.pth" and path.read_bytes() == payload
    assert not (hub / "toy.pth.partial").exists()
    assert "toy.pth" in capsys.readouterr().err  # the progress bar names the file


def test_offline_and_manual_only_errors_say_which_file_goes_where(hub, tmp_path):
    offline = _spec((tmp_path / "no/such/file.pth").as_uri())
    with pytest.raises(
        BackendUnavailableError,
        match=rf"toy weights not found; download from .* failed .*put toy.pth "
        rf"into {hub}",
    ):
        resolve_weights(offline)
    with pytest.raises(
        CheckpointError,
        match=rf"missing.pth: toy weights not found; put toy.pth into {hub} or at "
        rf".*missing.pth \(download it from https://example.org/toy\)",
    ):
        resolve_weights(_spec(), tmp_path / "missing.pth")


def test_dino_network_finds_its_weights_in_the_hub_cache(hub, monkeypatch):
    small = {"rgb_backbone": "dino", "rgb": {"embed_dim": 24, "depth": 1, "num_heads": 2, "random_init": True}}
    config = config_from_dict(small, ModelConfig)
    source = CleanPoseNet(config).rgb_encoder
    vit = {key.removeprefix("vit."): value for key, value in source.state_dict().items() if key.startswith("vit.")}
    hub.mkdir(parents=True)
    torch.save({**vit, "mask_token": torch.zeros(1, 24)}, hub / "dinov2_vits14_pretrain.pth")
    unset = {**config_to_dict(config), "rgb": {**small["rgb"], "random_init": False}}
    pretrained = config_from_dict(unset, ModelConfig)
    loaded = CleanPoseNet(pretrained).rgb_encoder
    for key, value in vit.items():
        assert torch.equal(loaded.vit.state_dict()[key], value), key
    (hub / "dinov2_vits14_pretrain.pth").unlink()
    monkeypatch.setattr(weights, "DINOV2_VITS14", WeightsFile("DINOv2", "dinov2_vits14_pretrain.pth", None, "x"))
    monkeypatch.setattr("cleanpose.models.net.DINOV2_VITS14", weights.DINOV2_VITS14)
    with pytest.raises(
        ConfigError,
        match=rf"rgb_weights is not set, and the DINOv2 not found; put "
        rf"dinov2_vits14_pretrain.pth into {hub}",
    ):
        CleanPoseNet(pretrained)
