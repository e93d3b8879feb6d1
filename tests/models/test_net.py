"""Tests of cleanpose.models.net: data flow, train/eval outputs, queue handling and checkpoints (tiny sizes)."""

import math

import numpy as np
import pytest
import torch

from cleanpose.config import ModelConfig, RgbBackboneConfig, load_config
from cleanpose.errors import CheckpointError, ConfigError
from cleanpose.models import CleanPoseNet, build_model, load_checkpoint, save_checkpoint
from cleanpose.models.backbones import DinoV2ViTS14
from cleanpose.models.distillation import PointBERTTeacher
from cleanpose.models.net import Augmentation, sample_augmentation

NUM_POINTS = 48
IMAGE = 28
CATEGORIES = 3
QUEUE = 5
SAMPLES = 3

TINY = {
    "num_categories": CATEGORIES,
    "point_encoder": {
        "num_centers": [12, 6],
        "radii": [[0.04, 0.08], [0.08, 0.16]],
        "num_neighbors": [[4, 6], [4, 6]],
        "sa_channels": [[8, 16], [16, 16]],
        "fp_channels": [[128], [16]],
    },
    "keypoint_detector": {"num_keypoints": 6, "attention": {"num_blocks": 1, "ffn_dim": 16}},
    "feature_aggregator": {"num_blocks": 1, "num_neighbors": [4]},
    "front_door": {
        "cross_attention": {"num_blocks": 1, "ffn_dim": 16},
        "self_attention": {"num_blocks": 1, "ffn_dim": 16},
        "num_queue_samples": SAMPLES,
        "queue_length": QUEUE,
    },
    "nocs_predictor": {"num_categories": CATEGORIES, "num_bins": 8, "attention": {"num_blocks": 1, "ffn_dim": 16}},
    "reconstructor": {"points_per_keypoint": 2},
    "distillation": {"feature_dim": 16, "teacher": "none"},
}


def _tiny_config(**overrides):
    return load_config(TINY, ModelConfig, overrides=[f"{k}={v}" for k, v in overrides.items()])


def _tiny_dino():
    torch.manual_seed(0)  # test-side seeding of the modules' default init
    return DinoV2ViTS14(random_init=True, embed_dim=24, depth=1, num_heads=2, pretrain_img_size=56)


def _tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = CleanPoseNet(_tiny_config(**overrides), rgb_encoder=_tiny_dino())
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    model.queue.fill(torch.randn(CATEGORIES, QUEUE, 256, generator=generator))
    return model


def _batch(seed=1, batch=3, categories=(0, 2, 2), train_shape=False):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, NUM_POINTS, 3, generator=generator) * 0.05
    points = points + torch.sign(points) * 0.03 + torch.tensor([0.1, -0.05, 0.8])
    labels = torch.tensor(categories)
    return {
        "rgb": torch.randn(batch, 3, IMAGE, IMAGE, generator=generator),
        "pts": points,
        "choose": torch.randint(0, IMAGE * IMAGE, (batch, NUM_POINTS), generator=generator),
        "category_label": labels.reshape(-1, 1) if train_shape else labels,
    }


def _queue_idx(seed=3):
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(QUEUE, generator=generator)[:SAMPLES] for _ in range(CATEGORIES)])


def test_reference_size_parameter_counts():
    with torch.device("meta"):
        dino = build_model(ModelConfig(rgb=RgbBackboneConfig(random_init=True)))
        resnet = build_model({"rgb_backbone": "resnet", "cat_num": 10, "NOCS_Predictor": {"cat_num": 10}}, 100)
    trainable = sum(p.numel() for p in dino.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in dino.parameters() if not p.requires_grad)
    assert (trainable, frozen) == (14_719_692, 22_056_576)  # docs/model.md §14
    assert len(dino.state_dict()) == 750 + 2  # + queue.features, queue.filled
    # HouseCat6D head (C = 10): +393,984; ResNet instead of DINO + feature_mlp; no unused fc (513,000).
    trainable = sum(p.numel() for p in resnet.parameters() if p.requires_grad)
    assert trainable == 15_113_676 - 49_280 + 17_913_900 - 513_000
    assert tuple(resnet.queue.features.shape) == (10, 100, 256)


def test_rgb_backbone_switches():
    with pytest.raises(ConfigError, match="rgb.random_init"):
        build_model(ModelConfig())
    with torch.device("meta"):
        vit = build_model(load_config({"rgb": {"random_init": True, "frozen": False, "embed_dim": 24, "depth": 2,
                                                "num_heads": 2}}, ModelConfig))  # fmt: skip
        psp = build_model(load_config({"rgb_backbone": "resnet", "rgb": {"psp_channels": 64}}, ModelConfig))
    blocks = vit.rgb_encoder.vit.blocks
    assert len(blocks) == 2 and blocks[0].attn.qkv.weight.shape == (72, 24)
    frozen = {name for name, parameter in vit.rgb_encoder.named_parameters() if not parameter.requires_grad}
    assert frozen == {"mask_token", "vit.norm.weight", "vit.norm.bias"}  # the parts the output never uses
    # up1 maps the pyramid's psp_channels to 256 with a 3x3 conv.
    assert psp.rgb_encoder.upsample1[1].weight.shape == (256, 64, 3, 3)


def test_eval_outputs_and_translation_equivariance():
    model = _tiny_model().eval()
    batch = _batch()
    queue_idx = _queue_idx()
    out = model(batch, queue_idx)
    shifted = dict(batch, pts=batch["pts"] + torch.tensor([0.3, -0.2, 0.5]))
    out_shifted = model(shifted, queue_idx)
    centroid = batch["pts"].mean(dim=1)
    # Eval: outputs = network-frame outputs + centroid.
    torch.testing.assert_close(out["pred_translation"], out["local_translation"] + centroid)
    torch.testing.assert_close(out["pred_kpt_3d"], out["local_kpt_3d"] + centroid[:, None])
    torch.testing.assert_close(out["pred_rotation"], out["local_rotation"])
    # Shifting the cloud shifts translation and keypoints only (the network sees centred points).
    torch.testing.assert_close(
        out_shifted["pred_translation"], out["pred_translation"] + torch.tensor([0.3, -0.2, 0.5]), atol=2e-5, rtol=0
    )
    torch.testing.assert_close(out_shifted["pred_rotation"], out["pred_rotation"], atol=2e-5, rtol=0)
    torch.testing.assert_close(out_shifted["kpt_nocs"], out["kpt_nocs"], atol=2e-5, rtol=0)
    # Keypoints are heat-map averages of the centred points.
    expected = out["heat_map"].double() @ (batch["pts"] - batch["pts"].mean(1, keepdim=True)).double()
    torch.testing.assert_close(out["local_kpt_3d"].double(), expected, atol=1e-6, rtol=0)
    assert tuple(out["local_recon_model"].shape) == (3, 12, 3) and tuple(out["recon_delta"].shape) == (3, 12, 3)
    torch.testing.assert_close(
        out["local_recon_model"], out["recon_delta"] + out["local_kpt_3d"].repeat_interleave(2, dim=1)
    )
    assert out["kpt_nocs"].abs().max() < 0.5
    assert out["pred_kpt_nocs"] is out["kpt_nocs"] and out["pred_heat_map"] is out["heat_map"]
    assert "recon_model" not in out  # training only; docs/model.md §16b's eval recon_model is local_recon_model^T


def test_every_key_has_one_layout_in_both_modes():
    model = _tiny_model()
    batch, queue_idx = _batch(train_shape=True), _queue_idx()
    evaluated = model.eval()(batch, queue_idx)
    trained = model.train()(batch, queue_idx, generator=torch.Generator().manual_seed(2), update_queue=False)
    only_train = {"recon_model", "pooled_kpt_feature"}
    assert set(trained) == set(evaluated) | only_train
    for key, value in evaluated.items():
        assert trained[key].shape == value.shape and trained[key].dtype == value.dtype, key
    assert trained["recon_model"].shape == trained["local_recon_model"].shape == (3, 12, 3)
    assert trained["pred_kpt_nocs"] is trained["kpt_nocs"]


def test_forward_is_forward_features_then_forward_head():
    model = _tiny_model().eval()
    batch, queue_idx = _batch(), _queue_idx()
    out = model(batch, queue_idx)
    centroid = batch["pts"].mean(dim=1, keepdim=True)
    features = model.forward_features(batch["rgb"], batch["pts"] - centroid, batch["choose"], out["queue_feats"])
    assert features.augmentation is None
    for key, value in features.outputs().items():
        assert torch.equal(value, out[key]), key
    head = model.forward_head(features, batch["category_label"])
    for key, value in head.items():
        assert torch.equal(value, out[key]), key


def test_queue_feats_follow_queue_idx_and_eval_is_pure():
    model = _tiny_model().eval()
    batch = _batch()
    before = {key: value.clone() for key, value in batch.items()}
    queue_before = model.queue.features.clone()
    queue_idx = _queue_idx()
    first = model(batch, queue_idx)
    second = model(batch, queue_idx)
    for key in first:
        assert torch.equal(first[key], second[key]), key
    labels = batch["category_label"]
    for b in range(3):
        for j in range(SAMPLES):
            assert torch.equal(first["queue_feats"][b, j], queue_before[labels[b], queue_idx[labels[b], j]])
    assert torch.equal(model.queue.features, queue_before)
    assert all(torch.equal(batch[key], before[key]) for key in batch)
    # The default draw reproduces legacy numpy choice per category, in category order.
    state = np.random.RandomState(7)
    drawn = model(batch, queue_random_state=np.random.RandomState(7))["queue_feats"]
    rows = [state.choice(QUEUE, SAMPLES, replace=False) for _ in range(CATEGORIES)]
    for b in range(3):
        assert torch.equal(drawn[b], queue_before[labels[b], torch.from_numpy(rows[int(labels[b])])])
    with pytest.raises(ValueError, match=r"queue_idx values span \[5, 5\]; expected indices in \[0, 5\)"):
        model(batch, torch.full((CATEGORIES, SAMPLES), 5))


def test_train_outputs_map_back_through_the_augmentation():
    model = _tiny_model().train()
    batch = _batch(train_shape=True)
    augmentation = sample_augmentation(3, torch.Generator().manual_seed(4))
    out = model(batch, _queue_idx(), augmentation=augmentation)
    rotation, translation, scale = (value.double() for value in augmentation)
    centroid = batch["pts"].double().mean(dim=1, keepdim=True)
    seen = ((batch["pts"].double() - centroid - translation) / scale[:, :, None]) @ rotation
    torch.testing.assert_close(out["local_kpt_3d"].double(), out["pred_heat_map"].double() @ seen, atol=1e-6, rtol=0)
    r, t, s = out["local_rotation"].double(), out["local_translation"].double(), out["local_size"].double()
    torch.testing.assert_close(out["pred_rotation"].double(), rotation @ r, atol=1e-6, rtol=0)
    expected_t = translation[:, 0] + scale * (rotation @ t[:, :, None])[..., 0] + centroid[:, 0]
    torch.testing.assert_close(out["pred_translation"].double(), expected_t, atol=1e-6, rtol=0)
    torch.testing.assert_close(out["pred_size"].double(), s * scale, atol=1e-6, rtol=0)
    keypoints = out["local_kpt_3d"].double()
    expected_k = (keypoints @ rotation.transpose(1, 2)) * scale[:, :, None] + translation + centroid
    torch.testing.assert_close(out["pred_kpt_3d"].double(), expected_k, atol=1e-6, rtol=0)
    recon_local = out["recon_delta"].double() + keypoints.repeat_interleave(2, dim=1)
    torch.testing.assert_close(out["local_recon_model"].double(), recon_local, atol=1e-6, rtol=0)
    expected_r = (recon_local @ rotation.transpose(1, 2)) * scale[:, :, None] + translation + centroid
    torch.testing.assert_close(out["recon_model"].double(), expected_r, atol=1e-6, rtol=0)
    assert "distillation_pointnet" not in out  # no teacher attached


def test_sample_augmentation_ranges_and_order():
    augmentation = sample_augmentation(64, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    translation = torch.empty(64, 1, 3).uniform_(-0.02, 0.02, generator=generator)
    angles = torch.empty(64, 3).uniform_(-20, 20, generator=generator)
    scale = torch.empty(64, 1).uniform_(0.8, 1.2, generator=generator)
    assert torch.equal(augmentation.translation, translation) and torch.equal(augmentation.scale, scale)
    # Rx·Ry·Rz built by hand for one object.
    a, b, c = (angles[5] / 180 * math.pi).double().tolist()
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    torch.testing.assert_close(augmentation.rotation[5].double(), (rx @ ry @ rz).double(), atol=1e-6, rtol=0)
    assert isinstance(augmentation, Augmentation) and augmentation.rotation.shape == (64, 3, 3)


def test_train_fifo_push_and_gradients():
    model = _tiny_model(distillation={"feature_dim": 16}).train()
    teacher = PointBERTTeacher(
        trans_dim=8, depth=1, num_heads=2, num_groups=8, group_size=4, encoder_dims=8, drop_path_rate=0.0
    )
    model.attach_teacher(teacher)
    queue_before = model.queue.features.clone()
    batch = _batch(categories=(2, 0, 2), train_shape=True)
    out = model(batch, _queue_idx(), generator=torch.Generator().manual_seed(9))
    # FIFO: category 2 received objects 0 then 2; category 0 object 1; category 1 unchanged.
    pooled = out["kpt_feature"].detach().mean(dim=1)
    torch.testing.assert_close(model.queue.features[2], torch.cat([queue_before[2, 2:], pooled[[0, 2]]]))
    torch.testing.assert_close(model.queue.features[0], torch.cat([queue_before[0, 1:], pooled[[1]]]))
    assert torch.equal(model.queue.features[1], queue_before[1])
    assert out["distillation_pointnet"].shape == (3, 16) and out["distillation_ulip"].shape == (3, 16)
    # Every trainable parameter gets a gradient; frozen DINO and teacher parameters get none.
    weights = torch.Generator().manual_seed(5)
    loss = sum(
        (value * torch.randn(value.shape, generator=weights)).sum() for key, value in out.items() if value.requires_grad
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, name
            # The KD projector's first layer sees zero gradient while its zero-initialised second layer is 0.
            if name != "distillation_head.projector.0.weight":
                assert parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert any(name.startswith("rgb_encoder.vit.") for name in frozen) and any(
        name.startswith("teacher.") for name in frozen
    )


def test_train_needs_a_generator_and_every_submodule_exists_in_every_mode():
    model = _tiny_model()
    names = {name for name, _ in model.named_children()}
    model.eval()
    assert {name for name, _ in model.named_children()} == names
    assert {
        "rgb_encoder",
        "point_encoder",
        "keypoint_detector",
        "feature_aggregator",
        "front_door",
        "queue",
        "reconstructor",
        "nocs_predictor",
        "pose_head",
        "distillation_head",
    } <= names
    model.train()
    with pytest.raises(ValueError, match=r"training needs a torch.Generator"):
        model(_batch(), _queue_idx())


def test_front_door_switch_and_missing_queue():
    model = _tiny_model(use_front_door="false").eval()
    model.queue.features.zero_()
    out = model(_batch())
    assert torch.equal(out["kpt_feature"], out["kpt_feature_gafa"]) and "queue_feats" not in out
    fresh = CleanPoseNet(_tiny_config(), rgb_encoder=_tiny_dino()).eval()
    with pytest.raises(CheckpointError, match=r"the confounder queue is missing"):
        fresh(_batch())


def test_width_mismatch_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"point_encoder output 16 \+ RGB 128 = 144 channels, but keypoint_detector.query_dim 256"
    ):
        CleanPoseNet(_tiny_config(**{"point_encoder.fp_channels": "[[16], [16]]"}), rgb_encoder=_tiny_dino())


def test_teacher_width_must_match():
    model = _tiny_model()
    with pytest.raises(ConfigError, match=r"teacher output width 8 differs from distillation.feature_dim 16"):
        model.attach_teacher(
            PointBERTTeacher(trans_dim=4, depth=1, num_heads=2, num_groups=4, group_size=2, encoder_dims=4)
        )


def test_checkpoint_round_trip(tmp_path, monkeypatch):
    model = _tiny_model().eval()
    model.attach_teacher(
        PointBERTTeacher(trans_dim=8, depth=1, num_heads=2, num_groups=8, group_size=4, encoder_dims=8)
    )
    assert not any(key.startswith("teacher.") for key in model.state_dict())
    path = tmp_path / "tiny.pth"
    save_checkpoint(model, path, step=12)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format_version"] == 1 and checkpoint["step"] == 12
    assert checkpoint["config"]["version"] == 2 and "model_dim" in checkpoint["config"]["front_door"]
    assert torch.equal(checkpoint["queue"], model.queue.features)
    assert not any(key.startswith("queue.") for key in checkpoint["model"])
    # load_checkpoint builds the RGB backbone from the config: swap in the tiny ViT for this test.
    monkeypatch.setattr("cleanpose.models.net.build_rgb_backbone", lambda name, **kwargs: _tiny_dino())
    loaded = load_checkpoint(path)
    assert not loaded.training
    batch, queue_idx = _batch(), _queue_idx()
    expected, actual = model(batch, queue_idx), loaded(batch, queue_idx)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key

    # Without a queue: loads, then a forward says the queue is missing.
    empty = _tiny_model()
    empty.queue = type(empty.queue)(CATEGORIES, QUEUE, 256)
    save_checkpoint(empty, tmp_path / "noqueue.pth")
    assert torch.load(tmp_path / "noqueue.pth", weights_only=True)["queue"] is None
    with pytest.raises(CheckpointError, match=r"queue is missing"):
        load_checkpoint(tmp_path / "noqueue.pth")(batch)


def test_checkpoint_of_config_version_1_loads(tmp_path, monkeypatch):
    # Checkpoints written before config version 2 store `feature_dim` / `num_samples` in their config.
    monkeypatch.setattr("cleanpose.models.net.build_rgb_backbone", lambda name, **kwargs: _tiny_dino())
    model = _tiny_model().eval()
    save_checkpoint(model, tmp_path / "new.pth")
    checkpoint = torch.load(tmp_path / "new.pth", weights_only=True)
    config = checkpoint["config"]
    config["version"] = 1
    config["point_encoder"]["num_samples"] = config["point_encoder"].pop("num_neighbors")
    config["front_door"]["feature_dim"] = config["front_door"].pop("model_dim")
    config["reconstructor"]["feature_dim"] = config["reconstructor"].pop("model_dim")
    torch.save(checkpoint, tmp_path / "old.pth")
    loaded = load_checkpoint(tmp_path / "old.pth")
    assert loaded.config == model.config
    batch, queue_idx = _batch(), _queue_idx()
    expected, actual = model(batch, queue_idx), loaded(batch, queue_idx)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    with pytest.raises(ValueError, match=r"extra entries \['queue'\] would replace the network's entries"):
        save_checkpoint(model, tmp_path / "clash.pth", queue=None)


def test_checkpoint_errors(tmp_path, monkeypatch):
    monkeypatch.setattr("cleanpose.models.net.build_rgb_backbone", lambda name, **kwargs: _tiny_dino())
    model = _tiny_model()
    path = tmp_path / "tiny.pth"
    save_checkpoint(model, path)
    checkpoint = torch.load(path, weights_only=True)

    def write(name, **changes):
        target = tmp_path / name
        torch.save({**checkpoint, **changes}, target)
        return target

    state = dict(checkpoint["model"])
    del state["pose_head.size_head.4.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"missing keys: pose_head.size_head.4.bias; unexpected keys: extra.weight"
    ):
        load_checkpoint(write("keys.pth", model=state))
    state = dict(checkpoint["model"], **{"pose_head.size_head.4.bias": torch.zeros(4)})
    with pytest.raises(
        CheckpointError, match=r"shape mismatch \(checkpoint vs network\): pose_head.size_head.4.bias \(4,\) vs \(3,\)"
    ):
        load_checkpoint(write("shape.pth", model=state))
    with pytest.raises(CheckpointError, match=r"format_version 7; this cleanpose reads 1"):
        load_checkpoint(write("version.pth", format_version=7))
    with pytest.raises(CheckpointError, match=r"unknown key 'colour'"):
        load_checkpoint(write("config.pth", config={**checkpoint["config"], "colour": 1}))
    with pytest.raises(
        CheckpointError, match=r"confounder queue features have shape \(2, 5, 256\); expected \(3, 5, 256\)"
    ):
        load_checkpoint(write("queue.pth", queue=torch.zeros(2, QUEUE, 256)))
    torch.save(checkpoint["model"], tmp_path / "bare.pth")
    with pytest.raises(
        CheckpointError, match=r"not a cleanpose checkpoint \(no 'format_version'\); convert reference checkpoints"
    ):
        load_checkpoint(tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match=r"nothing.pth: checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pth")


def test_build_model_accepts_reference_and_own_layouts():
    reference = {"rgb_backbone": "resnet", "cat_num": 10, "NOCS_Predictor": {"cat_num": 10}, "angle_range": 20}
    with torch.device("meta"):
        model = build_model(reference, 100)
        ours = build_model(
            {"rgb_backbone": "resnet", "num_categories": 10, "nocs_predictor": {"num_categories": 10}}, 100
        )
    assert model.config == ours.config
    assert model.config.num_categories == 10 and model.config.front_door.queue_length == 100
    assert not model.queue.is_filled
