"""The dataset choice: format / split → Dataset class, shared cache and skip counter."""

import yaml

from cleanpose.config import TrainConfig, load_config
from cleanpose.data.build import build_test_dataset, build_training_datasets
from cleanpose.data.datasets import (
    HouseCat6DTestDataset,
    HouseCat6DTrainingDataset,
    NocsTestDataset,
    NocsTrainingDataset,
)


def _config(tmp_path, data):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"data": data, "run": {"out_dir": str(tmp_path / "run")}}))
    return load_config(path, TrainConfig)


def test_nocs_sources_in_batch_order_share_cache_and_skips(nocs_tree, tmp_path):
    config = _config(tmp_path, {"root": str(nocs_tree.root), "images_per_epoch": [6, 2], "batch_sizes": [3, 1]})
    camera, real = build_training_datasets(config)
    assert isinstance(camera, NocsTrainingDataset) and isinstance(real, NocsTrainingDataset)
    assert (camera.source, len(camera), real.source, len(real)) == ("camera", 6, "real", 2)
    assert camera.depth_cache is real.depth_cache and camera.skips is real.skips


def test_housecat_training_and_test_choice(housecat_tree, nocs_tree, tmp_path):
    config = _config(tmp_path, {"root": str(housecat_tree), "format": "housecat6d", "batch_sizes": [4]})
    (dataset,) = build_training_datasets(config)
    assert isinstance(dataset, HouseCat6DTrainingDataset)
    common = dict(image_size=32, num_points=16, seed=0)
    assert isinstance(
        build_test_dataset(housecat_tree, "housecat6d", masks="segmentation", **common), HouseCat6DTestDataset
    )
    real = build_test_dataset(nocs_tree.root, "real", masks="segmentation", **common)
    truth = build_test_dataset(nocs_tree.root, "camera", masks="ground_truth", **common)
    assert isinstance(real, NocsTestDataset) and (real.dataset, real.detections) == ("real", "segmentation")
    assert (truth.dataset, truth.detections) == ("camera", "ground_truth")
