"""Tests of cleanpose.config: strict loading, overrides, saving, and the reference pose_net translation."""

import dataclasses

import pytest
import yaml

from cleanpose.config import (
    CONFIG_VERSION,
    AttentionConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    upgrade_config,
)
from cleanpose.errors import ConfigError

# The pose_net section of the reference config/HouseCat6D/housecat6d.yaml, written out by hand.
HOUSECAT6D_POSE_NET = {
    "rgb_backbone": "dino",
    "cat_num": 10,
    "distillation_feat_dim": 768,
    "angle_range": 20,
    "select_num": 12,
    "FDEncoder": {
        "feat_dim": 256,
        "AttnLayer": {"block_num": 4, "d_model": 256, "dim_ffn": 256, "num_head": 4},
        "SelfAttnLayer": {"block_num": 2, "d_model": 256, "dim_ffn": 256, "num_head": 4},
    },
    "IAKD": {
        "kpt_num": 96,
        "query_dim": 256,
        "AttnLayer": {"block_num": 4, "d_model": 256, "dim_ffn": 256, "num_head": 4},
    },
    "GAFA": {"block_num": 2, "K": [16, 32], "d_model": 256},
    "NOCS_Predictor": {
        "cat_num": 10,
        "bins_num": 64,
        "AttnLayer": {"block_num": 2, "d_model": 256, "dim_ffn": 256, "num_head": 4},
    },
    "Reconstructor": {"pts_per_kpt": 10, "ndim": 256},
}


def test_defaults_are_the_camera_real_network():
    config = ModelConfig()
    assert config.version == CONFIG_VERSION == 2
    assert config.rgb_backbone == "dino"
    assert config.num_categories == 6 and config.nocs_predictor.num_categories == 6
    assert config.keypoint_detector.num_keypoints == 96
    assert config.keypoint_detector.attention == AttentionConfig(4, 256, 4, 256, 0.0)
    assert config.front_door.cross_attention.num_blocks == 4
    assert config.front_door.self_attention.num_blocks == 2
    assert config.front_door.num_queue_samples == 12
    assert config.feature_aggregator.num_neighbors == (16, 32)
    assert config.nocs_predictor.num_bins == 64 and config.nocs_predictor.attention.num_blocks == 2
    assert config.reconstructor.points_per_keypoint == 10
    assert config.distillation.feature_dim == 768 and config.distillation.residual_weight == 0.1
    assert config.distillation.teacher == "pointbert" and config.distillation.teacher_mode == "train"
    assert config.point_encoder.out_dim == 128
    assert config.point_encoder.radii[3] == (0.08, 0.16)


def test_configs_are_frozen():
    config = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_categories = 3


def test_from_reference_yaml_housecat6d():
    config = ModelConfig.from_reference_yaml(HOUSECAT6D_POSE_NET, queue_length=100)
    assert config.num_categories == 10 and config.nocs_predictor.num_categories == 10
    assert config.front_door.queue_length == 100
    # Everything else equals the camera_real defaults, which the housecat6d section repeats.
    expected = ModelConfig(
        num_categories=10,
        nocs_predictor=dataclasses.replace(ModelConfig().nocs_predictor, num_categories=10),
        front_door=dataclasses.replace(ModelConfig().front_door, queue_length=100),
    )
    assert config == expected


def test_reference_round_trip_drops_only_unused_angle_range():
    config = ModelConfig.from_reference_yaml(HOUSECAT6D_POSE_NET)
    back = config.to_reference_yaml()
    expected = {key: value for key, value in HOUSECAT6D_POSE_NET.items() if key != "angle_range"}
    assert back == expected
    assert ModelConfig.from_reference_yaml(back) == config


def test_from_reference_yaml_cat_num_only_fills_both():
    config = ModelConfig.from_reference_yaml({"cat_num": 4, "rgb_backbone": "resnet"})
    assert config.num_categories == 4 and config.nocs_predictor.num_categories == 4
    assert config.rgb_backbone == "resnet"


def test_from_reference_yaml_errors():
    with pytest.raises(ConfigError, match=r"camera_real.yaml: unknown key 'IAKD.kpt'; valid keys: AttnLayer, kpt_num"):
        ModelConfig.from_reference_yaml({"IAKD": {"kpt": 3}}, source="camera_real.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'featup'; valid keys: .*FDEncoder"):
        ModelConfig.from_reference_yaml({"featup": 1})
    with pytest.raises(ConfigError, match=r"nocs_predictor.num_categories 10 differs from num_categories 6"):
        ModelConfig.from_reference_yaml({"cat_num": 6, "NOCS_Predictor": {"cat_num": 10}})
    with pytest.raises(ConfigError, match=r"'rgb_backbone' is 'featup'; expected one of 'dino', 'resnet'"):
        ModelConfig.from_reference_yaml({"rgb_backbone": "featup"})


def test_unknown_key_lists_valid_keys_at_that_level(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("front_door:\n  cross_attention:\n    heads: 4\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{path}: unknown key 'front_door.cross_attention.heads'; "
        r"valid keys: num_blocks, model_dim, num_heads, ffn_dim, dropout$",
    ):
        load_config(path, ModelConfig)
    with pytest.raises(ConfigError, match=r"^<dict>: unknown key 'colour'; valid keys: version, rgb_backbone"):
        load_config({"colour": 1}, ModelConfig)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"num_categories": True}, r"'num_categories' must be an integer; got True"),
        ({"num_categories": 2.5}, r"'num_categories' must be an integer; got 2.5"),
        ({"num_categories": 0}, r"'num_categories' is 0; expected >= 1"),
        ({"use_front_door": "yes"}, r"'use_front_door' must be true or false; got 'yes'"),
        ({"distillation": {"teacher": "dgcnn"}}, r"'distillation.teacher' is 'dgcnn'; expected one of"),
        ({"distillation": {"residual_weight": "0.1"}}, r"'distillation.residual_weight' must be a number"),
        (
            {"keypoint_detector": {"attention": {"dropout": 1.0}}},
            r"'keypoint_detector.attention.dropout' is 1.0; expected < 1.0",
        ),
        ({"feature_aggregator": {"num_neighbors": 16}}, r"'feature_aggregator.num_neighbors' must be a list; got 16"),
        (
            {"feature_aggregator": {"num_neighbors": [16, 0]}},
            r"'feature_aggregator.num_neighbors\[1\]' is 0; expected >= 1",
        ),
        (
            {"feature_aggregator": {"num_neighbors": [16]}},
            r"feature_aggregator: num_neighbors has 1 entries; num_blocks is 2",
        ),
        ({"front_door": {"queue_length": 8}}, r"front_door: num_queue_samples 12 exceeds queue_length 8"),
        ({"front_door": 3}, r"'front_door' must be a mapping; got 3"),
        (
            {"point_encoder": {"radii": [[0.01], [0.02], [0.04], [0.08]]}},
            r"point_encoder: level 0 has 1 radii but 2 num_neighbors",
        ),
        ({"version": 3}, r"unsupported config version 3; this cleanpose reads versions 1 to 2"),
        ({"version": 0}, r"unsupported config version 0; this cleanpose reads versions 1 to 2"),
    ],
)
def test_type_and_range_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data, ModelConfig)


def test_int_is_accepted_for_float_and_lists_become_tuples():
    config = load_config(
        {"distillation": {"residual_weight": 1}, "feature_aggregator": {"num_neighbors": [4, 8]}}, ModelConfig
    )
    assert config.distillation.residual_weight == 1.0 and isinstance(config.distillation.residual_weight, float)
    assert config.feature_aggregator.num_neighbors == (4, 8)


def test_overrides():
    config = load_config(
        {"num_categories": 3, "nocs_predictor": {"num_categories": 3}},
        ModelConfig,
        overrides=[
            "feature_aggregator.num_neighbors=[4, 8]",
            "distillation.teacher_checkpoint=ulip2.pt",
            "distillation.teacher=none",
            "use_distillation=false",
            "keypoint_detector.attention.num_heads=2",
        ],
    )
    assert config.num_categories == 3
    assert config.feature_aggregator.num_neighbors == (4, 8)
    assert config.distillation.teacher_checkpoint == "ulip2.pt"
    assert config.distillation.teacher == "none"
    assert config.use_distillation is False
    assert config.keypoint_detector.attention.num_heads == 2
    # The input mapping is left unchanged.
    raw = {"front_door": {"queue_length": 90}}
    assert apply_overrides(raw, ["front_door.queue_length=100"], ModelConfig)["front_door"]["queue_length"] == 100
    assert raw == {"front_door": {"queue_length": 90}}


def test_override_errors():
    with pytest.raises(ConfigError, match=r"--set 'front_door': expected key=value"):
        load_config({}, ModelConfig, overrides=["front_door"])
    with pytest.raises(
        ConfigError,
        match=r"--set front_door.length=3: unknown key 'front_door.length'; valid keys: model_dim, cross_attention",
    ):
        load_config({}, ModelConfig, overrides=["front_door.length=3"])
    with pytest.raises(ConfigError, match=r"--set num_categories.x=3: 'num_categories' is a value, not a section"):
        load_config({}, ModelConfig, overrides=["num_categories.x=3"])
    with pytest.raises(ConfigError, match=r"'num_categories' must be an integer; got 'many'"):
        load_config({}, ModelConfig, overrides=["num_categories=many"])


def test_save_load_round_trip(tmp_path):
    config = load_config(
        {},
        ModelConfig,
        overrides=["rgb_backbone=resnet", "front_door.queue_length=100", "distillation.teacher_checkpoint=a/b.pt"],
    )
    path = tmp_path / "saved.yaml"
    save_config(config, path)
    assert load_config(path, ModelConfig) == config
    # The file is plain YAML whose values equal config_to_dict.
    assert yaml.safe_load(path.read_text()) == config_to_dict(config)
    assert config_to_dict(config)["feature_aggregator"]["num_neighbors"] == [16, 32]


def test_file_errors(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=rf"{missing}: cannot read config file"):
        load_config(missing, ModelConfig)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=rf"{broken}: not valid YAML"):
        load_config(broken, ModelConfig)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(ConfigError, match=rf"{listing}: the top level must be a mapping; got list"):
        load_config(listing, ModelConfig)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty, ModelConfig) == ModelConfig()


def test_config_from_dict_accepts_built_sections():
    attention = AttentionConfig(num_blocks=1, model_dim=8, num_heads=2, ffn_dim=8)
    config = config_from_dict({"keypoint_detector": {"attention": attention}}, ModelConfig)
    assert config.keypoint_detector.attention is attention


def test_version_1_files_are_upgraded(tmp_path):
    # Version 1 named the widths `feature_dim` (front door, reconstructor) and the ball-query counts
    # `num_samples`; version 2 uses `model_dim` and `num_neighbors` everywhere.
    old_model = {
        "point_encoder": {"num_samples": [[4, 8], [4, 8], [4, 8], [4, 8]]},
        "front_door": {"feature_dim": 64, "cross_attention": {"model_dim": 64}, "self_attention": {"model_dim": 64}},
        "reconstructor": {"feature_dim": 64},
    }
    expected = load_config(
        {
            "point_encoder": {"num_neighbors": [[4, 8], [4, 8], [4, 8], [4, 8]]},
            "front_door": {"model_dim": 64, "cross_attention": {"model_dim": 64}, "self_attention": {"model_dim": 64}},
            "reconstructor": {"model_dim": 64},
        },
        ModelConfig,
    )
    assert expected.front_door.model_dim == 64 and expected.point_encoder.num_neighbors[0] == (4, 8)
    assert load_config({"version": 1, **old_model}, ModelConfig) == expected
    # In a training file the model section takes the file's version unless it has its own.
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "model": old_model}))
    assert load_config(path, TrainConfig).model == expected
    path.write_text(yaml.safe_dump({"version": 2, "model": {"version": 1, **old_model}}))
    assert load_config(path, TrainConfig).model == expected
    # Overrides use the current names and apply after the upgrade.
    upgraded = load_config({"version": 1, **old_model}, ModelConfig, overrides=["reconstructor.model_dim=32"])
    assert upgraded.reconstructor.model_dim == 32
    # The raw mapping is not changed; a version-2 file with a version-1 key is an error.
    raw = {"version": 1, "reconstructor": {"feature_dim": 64}}
    upgrade_config(raw, ModelConfig)
    assert raw == {"version": 1, "reconstructor": {"feature_dim": 64}}
    with pytest.raises(ConfigError, match=r"unknown key 'reconstructor.feature_dim'; valid keys: points_per_keypoint"):
        load_config({"version": 2, "reconstructor": {"feature_dim": 64}}, ModelConfig)
