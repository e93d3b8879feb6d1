"""Fixtures of the engine tests: a small synthetic NOCS dataset, a tiny training config, its queue."""

import pytest
import torch
import yaml

from cleanpose.config import TrainConfig, load_config
from cleanpose.data.synth.generate import generate
from cleanpose.data.synth.sensor import SensorNoise
from cleanpose.engine.queue_extraction import write_queue_file

# A few-thousand-parameter CleanPose: every module present, a trainable tiny ViT as RGB branch.
TINY_MODEL = {
    "rgb_backbone": "dino",
    "rgb": {"random_init": True, "frozen": False, "embed_dim": 24, "depth": 1, "num_heads": 2},
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
        "num_queue_samples": 2,
        "queue_length": 3,
    },
    "nocs_predictor": {"num_bins": 8, "attention": {"num_blocks": 1, "ffn_dim": 16}},
    "reconstructor": {"points_per_keypoint": 2},
    "distillation": {"teacher": "none"},
}


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """camera/train, real/train and real/test, 2 scenes x 2 frames each, noise-free depth."""
    root = tmp_path_factory.mktemp("engine") / "data"
    generate(root, "nocs", scenes=2, frames_per_scene=2, seed=3, splits=("camera_train", "real_train", "real_test"),
             noise=SensorNoise(enabled=False), progress=False)  # fmt: skip
    return root


def write_train_config(synth_root, folder, name="train.yaml", **sections):
    """Write a tiny training config (and its random queue) into `folder`; return its path.

    ``sections`` are merged into the defaults below.
    """
    config = {
        "model": TINY_MODEL,
        "data": {
            "root": str(synth_root),
            "batch_sizes": [3, 1],
            "images_per_epoch": [12, 4],
            "image_size": 28,
            "num_points": 48,
            "workers": 0,
        },  # fmt: skip
        "optim": {"base_lr": 1e-3, "max_lr": 5e-3, "step_size": 4},
        "run": {
            "out_dir": str(folder / "run"),
            "seed": 5,
            "epochs": 2,
            "iterations_per_epoch": 3,
            "checkpoint_every": 1,
            "log_every": 1,
            "device": "cpu",
            "initial_queue": str(folder / "queue.pt"),
        },  # fmt: skip
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    parsed = load_config(path, TrainConfig)
    features = parsed.model.front_door
    queue_shape = (parsed.model.num_categories, features.queue_length, features.model_dim)
    generator = torch.Generator().manual_seed(0)
    write_queue_file(parsed.run.initial_queue, torch.randn(queue_shape, generator=generator), "test")
    return path


@pytest.fixture
def train_config_file(synth_root, tmp_path):
    """A function ``make(name="train.yaml", **sections)`` writing a tiny config (`write_train_config`) in tmp_path."""

    def make(name="train.yaml", **sections):
        return write_train_config(synth_root, tmp_path, name, **sections)

    return make
