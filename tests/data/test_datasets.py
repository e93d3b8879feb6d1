"""Dataset classes: samples against float64/brute-force oracles, randomness keys, skips and errors."""

import logging
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cleanpose.data import datasets
from cleanpose.data.collate import concat_batches, mixed_batches
from cleanpose.data.datasets import (
    HouseCat6DTestDataset,
    HouseCat6DTrainingDataset,
    NocsTestDataset,
    NocsTrainingDataset,
)
from cleanpose.data.depth_cache import FilledDepthCache
from cleanpose.data.depth_completion import fill_missing
from cleanpose.data.formats.encoding import (
    read_depth,
    read_mask,
    read_pickle,
    write_depth,
    write_mask,
    write_pickle_atomic,
    write_text_atomic,
)
from cleanpose.data.formats.nocs import CAMERA_INTRINSICS, REAL_INTRINSICS
from cleanpose.data.rng import STREAMS, sample_generators
from cleanpose.data.sample import crop_window
from cleanpose.errors import DataFormatError
from tests.data.conftest import HOUSECAT_INTRINSICS

TRAIN_KEYS = {
    "pts",
    "rgb",
    "choose",
    "category_label",
    "model",
    "qo",
    "translation_label",
    "rotation_label",
    "size_label",
    "pc_mask",
}


def _canonical_float64(rotation):
    rotation = rotation.astype(np.float64)
    a, b = rotation[0, 0] + rotation[2, 2], rotation[0, 2] - rotation[2, 0]
    r = np.hypot(a, b)
    return rotation @ np.array([[a / r, 0, -b / r], [0, 1, 0], [b / r, 0, a / r]])


@pytest.mark.parametrize("source", ["real", "camera"])
@pytest.mark.parametrize("seed", [0, 1])
def test_nocs_training_sample_against_hand_recomputation(nocs_tree, source, seed):
    dataset = NocsTrainingDataset(nocs_tree.root, source, outlier_threshold=0.1)
    sample = dataset.build_sample(1, np.random.RandomState(seed), torch.Generator().manual_seed(seed))
    assert set(sample) == TRAIN_KEYS
    shapes = {key: tuple(value.shape) for key, value in sample.items()}
    assert shapes == {
        "pts": (1024, 3),
        "rgb": (3, 224, 224),
        "choose": (1024,),
        "category_label": (1,),
        "model": (64, 3),
        "qo": (1024, 3),
        "translation_label": (3,),
        "rotation_label": (3, 3),
        "size_label": (3,),
        "pc_mask": (1024,),
    }
    assert sample["choose"].dtype == torch.int64 and sample["category_label"].dtype == torch.int64

    # Replay the reference draws by hand: instance, point choice, noise.
    draws = np.random.RandomState(seed)
    prefix = f"{source}/{(nocs_tree.real_train if source == 'real' else nocs_tree.camera_train)[1]}"
    label = read_pickle(nocs_tree.root / f"{prefix}_label.pkl")
    mask = read_mask(nocs_tree.root / f"{prefix}_mask.png")
    depth_file = (
        nocs_tree.root / f"{prefix}_depth.png"
        if source == "real"
        else nocs_tree.root / "camera_full_depths" / f"{prefix[len('camera/') :]}_composed.png"
    )
    depth = fill_missing(read_depth(depth_file))
    instance = draws.randint(0, 2)
    window = crop_window(label["bboxes"][instance], *mask.shape)
    valid = (mask == label["instance_ids"][instance]) & (depth > 0)
    window_valid = valid[window.rmin : window.rmax, window.cmin : window.cmax]
    candidates = np.flatnonzero(window_valid)
    chosen = candidates[draws.choice(len(candidates), 1024)]  # fewer than 1024 pixels: with replacement
    noise = np.clip(0.001 * draws.randn(1024, 3), -0.005, 0.005)
    rows, cols = chosen // window.size + window.rmin, chosen % window.size + window.cmin
    intrinsics = REAL_INTRINSICS if source == "real" else CAMERA_INTRINSICS
    z = depth[rows, cols].astype(np.float64) / 1000.0
    points = (
        np.stack(
            [(cols - intrinsics[0, 2]) * z / intrinsics[0, 0], (rows - intrinsics[1, 2]) * z / intrinsics[1, 1], z],
            axis=1,
        )
        + noise
    )
    np.testing.assert_allclose(sample["pts"].numpy(), points, rtol=1e-6, atol=1e-8)

    assert sample["category_label"].item() == label["class_ids"][instance] - 1
    ratio = 224 / window.size
    expected_choose = np.floor((chosen // window.size) * ratio) * 224 + np.floor((chosen % window.size) * ratio)
    np.testing.assert_array_equal(sample["choose"].numpy(), expected_choose)

    rotation = label["rotations"][instance]
    if label["class_ids"][instance] - 1 in (0, 1, 3):
        rotation = _canonical_float64(rotation)
    size = label["scales"][instance].astype(np.float64) * label["sizes"][instance]
    np.testing.assert_allclose(sample["rotation_label"].numpy(), rotation, atol=1e-6)
    np.testing.assert_allclose(sample["size_label"].numpy(), size, rtol=1e-6)
    np.testing.assert_array_equal(sample["translation_label"].numpy(), label["translations"][instance])
    qo = (points - label["translations"][instance]) @ rotation / np.linalg.norm(size)
    np.testing.assert_allclose(sample["qo"].numpy(), qo, rtol=1e-5, atol=1e-6)
    model = read_pickle(nocs_tree.root / f"obj_models/{source}_train.pkl")[label["model_list"][instance]]
    np.testing.assert_array_equal(sample["model"].numpy(), model.astype(np.float32))
    nearest = np.linalg.norm(qo[:, None] - model[None], axis=2).min(axis=1)
    decided = np.abs(nearest - 0.1) > 1e-5  # away from the threshold, rounding cannot flip the decision
    np.testing.assert_array_equal(sample["pc_mask"].numpy()[decided], (nearest < 0.1)[decided])


def test_training_sample_keyed_by_seed_epoch_index(nocs_tree):
    dataset = NocsTrainingDataset(nocs_tree.root, "real", 6, seed=3)
    first = dataset[4]
    again = NocsTrainingDataset(nocs_tree.root, "real", 6, seed=3)[4]
    for key in first:
        assert torch.equal(first[key], again[key]), key
    other_index = dataset[5]
    other_seed = NocsTrainingDataset(nocs_tree.root, "real", 6, seed=4)[4]
    assert not torch.equal(first["pts"], other_index["pts"]) and not torch.equal(first["pts"], other_seed["pts"])
    # Explicit (epoch, index) keys equal set_epoch + index; a different epoch gives different draws.
    dataset.set_epoch(2)
    keyed = NocsTrainingDataset(nocs_tree.root, "real", 6, seed=3)[(2, 4)]
    assert torch.equal(dataset[4]["rgb"], keyed["rgb"])
    assert not torch.equal(dataset[4]["pts"], first["pts"])
    # The numpy and torch generators are the documented ones.
    numpy_generator, torch_generator = sample_generators(3, 2, 4, STREAMS["real"])
    assert numpy_generator.random() == np.random.Generator(np.random.PCG64([3, 2, 4, 1])).random()
    assert isinstance(torch_generator, torch.Generator)


def test_loader_workers_do_not_change_samples(nocs_tree):
    dataset = NocsTrainingDataset(nocs_tree.root, "real", 4, seed=1)
    sequential = list(DataLoader(dataset, batch_size=2, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    for batch_a, batch_b in zip(sequential, parallel, strict=True):
        for key in batch_a:
            assert torch.equal(batch_a[key], batch_b[key]), key


def test_epoch_resampling_with_and_without_replacement(nocs_tree):
    # 2 REAL frames, 5 per epoch: with replacement.
    dataset = NocsTrainingDataset(nocs_tree.root, "real", 5, seed=9)
    for epoch in range(3):
        expected = np.random.Generator(np.random.PCG64([9, epoch, 2**32 - 1, 1])).choice(2, 5, replace=True)
        np.testing.assert_array_equal(dataset.frame_indices(epoch), expected)
    epochs = [dataset.frame_indices(epoch).tolist() for epoch in range(6)]
    assert len({tuple(e) for e in epochs}) > 1  # re-sampled per epoch
    # 2 CAMERA frames, 1 per epoch: without replacement (count > n).
    camera = NocsTrainingDataset(nocs_tree.root, "camera", 1, seed=9)
    expected = np.random.Generator(np.random.PCG64([9, 0, 2**32 - 1, 0])).choice(2, 1, replace=False)
    np.testing.assert_array_equal(camera.frame_indices(0), expected)
    assert len(camera) == 1 and len(NocsTrainingDataset(nocs_tree.root, "camera")) == 2
    with pytest.raises(ValueError, match="num_images_per_epoch must be -1 or positive; got 0"):
        NocsTrainingDataset(nocs_tree.root, "camera", 0)


def test_mixed_batches_camera_first(nocs_tree):
    camera = DataLoader(NocsTrainingDataset(nocs_tree.root, "camera", 3), batch_size=3)
    real = DataLoader(NocsTrainingDataset(nocs_tree.root, "real", 1), batch_size=1)
    camera_batch, real_batch = next(iter(camera)), next(iter(real))
    mixed = concat_batches([camera_batch, real_batch])
    assert mixed["pts"].shape == (4, 1024, 3) and mixed["category_label"].shape == (4, 1)
    assert torch.equal(mixed["qo"][:3], camera_batch["qo"]) and torch.equal(mixed["qo"][3:], real_batch["qo"])
    with pytest.raises(ValueError, match="batches have different keys"):
        concat_batches([camera_batch, {"pts": real_batch["pts"]}])


# ------------------------------------------------------------------------------------------------
# skips and errors


def test_missing_composed_depth_is_counted_and_redrawn(nocs_tree, caplog):
    missing = nocs_tree.root / "camera_full_depths/train/00000/0000_composed.png"
    missing.unlink()
    dataset = NocsTrainingDataset(nocs_tree.root, "camera")
    with caplog.at_level(logging.WARNING, logger="cleanpose.data.skips"):
        for index in range(4):
            dataset[(index, 0)]  # frame 0 each time: always a skip, then a redraw
    assert dataset.skips.counts()["missing_depth"] >= 4
    assert str(missing) in caplog.text and caplog.text.count(str(missing)) == 1  # logged once per file
    dataset.skips.reset()
    assert dataset.skips.counts()["missing_depth"] == 0


def test_skip_counts_visible_from_loader_workers(nocs_tree):
    (nocs_tree.root / "camera_full_depths/train/00000/0000_composed.png").unlink()
    dataset = NocsTrainingDataset(nocs_tree.root, "camera", 4, seed=2)
    expected = sum(1 for i in range(4) if nocs_tree.camera_train[dataset.frame_indices(0)[i]].endswith("0000"))
    list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert dataset.skips.counts()["missing_depth"] >= expected >= 1


def test_unreadable_color_is_counted(nocs_tree):
    bad = nocs_tree.root / "real/train/scene_1/0000_color.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    dataset = NocsTrainingDataset(nocs_tree.root, "real")
    sample = dataset[0]
    assert sample["pts"].shape == (1024, 3)
    assert dataset.skips.counts()["unreadable_color"] >= 1


def test_all_zero_depth_gives_up_with_clear_error(nocs_tree, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_REDRAWS", 5)
    for entry in nocs_tree.real_train:
        depth_file = nocs_tree.root / f"real/{entry}_depth.png"
        write_depth(depth_file, np.zeros((nocs_tree.height, nocs_tree.width), np.uint16))
    dataset = NocsTrainingDataset(nocs_tree.root, "real")
    with pytest.raises(DataFormatError, match=r"no usable sample after 5 redraws .*'empty_instance': 5"):
        dataset[0]


def test_truncated_depth_png_names_file(nocs_tree):
    depth_file = nocs_tree.root / "real/train/scene_1/0000_depth.png"
    depth_file.write_bytes(depth_file.read_bytes()[:60])
    with pytest.raises(DataFormatError, match=r"0000_depth.png: depth image is empty, truncated"):
        NocsTrainingDataset(nocs_tree.root, "real")[0]


def test_label_missing_key_names_file(nocs_tree):
    path = nocs_tree.root / "real/train/scene_1/0000_label.pkl"
    data = read_pickle(path)
    del data["instance_ids"]
    write_pickle_atomic(path, data)
    with pytest.raises(DataFormatError, match=r"0000_label.pkl: label has no key 'instance_ids'"):
        NocsTrainingDataset(nocs_tree.root, "real")[0]


def test_mismatched_image_sizes(nocs_tree):
    write_mask(nocs_tree.root / "real/train/scene_1/0000_mask.png", np.full((60, 80), 255, np.uint8))
    with pytest.raises(DataFormatError, match=r"frame images differ in size .*0000_mask.png 60x80"):
        NocsTrainingDataset(nocs_tree.root, "real")[0]


def test_list_naming_absent_frame(nocs_tree):
    write_text_atomic(nocs_tree.root / "real/train_list.txt", "train/scene_1/0099\n")
    with pytest.raises(DataFormatError, match=r"scene_1/0099_depth.png: depth file not found"):
        NocsTrainingDataset(nocs_tree.root, "real")[0]


def test_label_model_missing_from_models(nocs_tree):
    write_pickle_atomic(nocs_tree.root / "obj_models/real_train.pkl", {"other": np.zeros((4, 3))})
    with pytest.raises(DataFormatError, match=r"model 'bottle_a' is not in .*real_train.pkl|model 'mug_b'"):
        NocsTrainingDataset(nocs_tree.root, "real")[0]


# ------------------------------------------------------------------------------------------------
# depth cache


def test_filled_depth_cache_disk_and_invalidation(nocs_tree, tmp_path):
    depth_file = nocs_tree.root / "real/train/scene_1/0000_depth.png"
    direct = fill_missing(read_depth(depth_file))
    cache = FilledDepthCache(tmp_path / "cache", max_items=1)
    np.testing.assert_array_equal(cache.filled_depth(depth_file), direct)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    fresh = FilledDepthCache(tmp_path / "cache")  # reads the disk entry
    np.testing.assert_array_equal(fresh.filled_depth(depth_file), direct)
    # Rewriting the file (new mtime) invalidates the entry.
    write_depth(depth_file, np.full(direct.shape, 1000, np.uint16))
    os.utime(depth_file, ns=(1, 1))
    np.testing.assert_allclose(fresh.filled_depth(depth_file)[10:], 1000.0, atol=1e-3)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_cached_dataset_equals_uncached(nocs_tree, tmp_path):
    plain = NocsTrainingDataset(nocs_tree.root, "real", 3, seed=5)[2]
    cached = NocsTrainingDataset(nocs_tree.root, "real", 3, seed=5, depth_cache=FilledDepthCache(tmp_path / "c", 4))
    for _ in range(2):
        sample = cached[2]
        for key in plain:
            assert torch.equal(plain[key], sample[key]), key


# ------------------------------------------------------------------------------------------------
# HouseCat6D training


def test_housecat_training_sample(housecat_tree):
    dataset = HouseCat6DTrainingDataset(housecat_tree)
    assert len(dataset) == 4
    for seed in range(2):
        sample = dataset.build_sample(2, np.random.RandomState(seed), torch.Generator().manual_seed(0))
        assert set(sample) == {
            "pts",
            "rgb",
            "choose",
            "category_label",
            "translation_label",
            "rotation_label",
            "size_label",
        }
        label = read_pickle(housecat_tree / "scene02/labels/000000_label.pkl")
        instance = np.random.RandomState(seed).randint(0, 2)
        assert sample["category_label"].item() == label["class_ids"][instance] - 1
        np.testing.assert_array_equal(sample["size_label"].numpy(), label["gt_scales"][instance])
        rotation = label["rotations"][instance]
        if label["class_ids"][instance] - 1 in (1, 2, 7):
            rotation = _canonical_float64(rotation)
        np.testing.assert_allclose(sample["rotation_label"].numpy(), rotation, atol=1e-6)
        # Points project into the instance's box through the scene intrinsics (up to the ±5 mm noise,
        # under 3 px at these depths) and spread over it.
        z = sample["pts"].numpy()[:, 2]
        cols = sample["pts"].numpy()[:, 0] / z * HOUSECAT_INTRINSICS[0, 0] + HOUSECAT_INTRINSICS[0, 2]
        _, c0, _, c1 = label["bboxes"][instance]
        assert np.all((cols > c0 - 3) & (cols < c1 + 3)) and cols.max() - cols.min() > (c1 - c0) / 2


def test_housecat_training_redraws_instance_without_pixels(housecat_tree):
    path = housecat_tree / "scene01/labels/000000_label.pkl"
    label = read_pickle(path)
    label["bboxes"][0] = [100, 0, 110, 10]  # window far away from instance 1's pixels
    write_pickle_atomic(path, label)
    dataset = HouseCat6DTrainingDataset(housecat_tree)
    seed = next(s for s in range(50) if np.random.RandomState(s).randint(0, 2) == 0)
    sample = dataset.build_sample(0, np.random.RandomState(seed), torch.Generator().manual_seed(0))
    assert sample["category_label"].item() == label["class_ids"][1] - 1  # the other instance
    assert dataset.skips.counts()["empty_instance"] == 1


# ------------------------------------------------------------------------------------------------
# test datasets


@pytest.mark.parametrize("name", ["real", "camera"])
def test_nocs_test_sample_keeps_detections_with_more_than_16_points(nocs_tree, name):
    dataset = NocsTestDataset(nocs_tree.root, name, seed=1)
    item = dataset[0]
    stored = read_pickle(nocs_tree.real_test_result if name == "real" else nocs_tree.camera_test_result)
    np.testing.assert_array_equal(item["pred_class_ids"], stored["pred_class_ids"][[0, 2]])
    np.testing.assert_array_equal(item["pred_bboxes"], stored["pred_bboxes"][[0, 2]])
    np.testing.assert_array_equal(item["pred_scores"], stored["pred_scores"][[0, 2]])
    np.testing.assert_array_equal(item["category_label"].numpy(), [0, 5])
    assert item["pts"].shape == (2, 1024, 3) and item["rgb"].shape == (2, 3, 224, 224)
    assert item["choose"].shape == (2, 1024) and item["choose"].dtype == torch.int64
    for key in ("gt_class_ids", "gt_bboxes", "gt_RTs", "gt_scales", "gt_handle_visibility"):
        np.testing.assert_array_equal(item[key], stored[key])
    assert item["result_name"] == (nocs_tree.real_test_result if name == "real" else nocs_tree.camera_test_result).name
    # Detection 2 has 17 valid pixels: all 1024 points are back-projections of exactly those pixels.
    prefix = item["frame"]
    depth_file = (
        nocs_tree.root / f"{prefix}_depth.png"
        if name == "real"
        else nocs_tree.root / "camera_full_depths" / f"{prefix[len('camera/') :]}_composed.png"
    )
    depth = fill_missing(read_depth(depth_file))
    intrinsics = REAL_INTRINSICS if name == "real" else CAMERA_INTRINSICS
    rows, cols = np.nonzero(nocs_tree.test_mask_17)
    z = depth[rows, cols].astype(np.float64) / 1000
    pixel_points = np.stack(
        [(cols - intrinsics[0, 2]) * z / intrinsics[0, 0], (rows - intrinsics[1, 2]) * z / intrinsics[1, 1], z], axis=1
    )
    distances = np.linalg.norm(item["pts"][1].numpy()[:, None].astype(np.float64) - pixel_points[None], axis=2)
    assert distances.min(axis=1).max() < 1e-6
    assert len(np.unique(item["pts"][1].numpy(), axis=0)) == 17  # with replacement: every pixel drawn
    assert dataset.skips.counts()["few_points"] == 1  # the 16-pixel detection, dropped with a trace
    # Deterministic: the same item twice.
    assert torch.equal(dataset[0]["pts"], item["pts"])


def test_nocs_test_image_without_kept_detection_gives_zero_predictions(nocs_tree):
    data = read_pickle(nocs_tree.real_test_result)
    for key in ("pred_class_ids", "pred_bboxes", "pred_scores"):
        data[key] = data[key][1:2]
    data["pred_masks"] = data["pred_masks"][:, :, 1:2]  # only the 16-pixel detection
    write_pickle_atomic(nocs_tree.real_test_result, data)
    dataset = NocsTestDataset(nocs_tree.root, "real")
    item = dataset[0]
    assert item["pts"].shape == (0, 1024, 3) and item["category_label"].shape == (0,)
    assert len(item["pred_class_ids"]) == 0 and len(item["gt_class_ids"]) == 2
    assert dataset.skips.counts()["no_detection"] == 1 and dataset.skips.counts()["few_points"] == 1


def test_camera_test_missing_composed_depth_gives_zero_predictions(nocs_tree):
    (nocs_tree.root / "camera_full_depths/val/00000/0000_composed.png").unlink()
    dataset = NocsTestDataset(nocs_tree.root, "camera")
    item = dataset[0]
    assert item["pts"].shape[0] == 0 and item["pred_bboxes"].shape == (0, 4)
    assert dataset.skips.counts()["missing_depth"] == 1


def test_real_test_missing_depth_is_an_error(nocs_tree):
    (nocs_tree.root / "real/test/scene_1/0000_depth.png").unlink()
    with pytest.raises(DataFormatError, match=r"0000_depth.png: depth file not found"):
        NocsTestDataset(nocs_tree.root, "real")[0]


def test_nocs_test_ground_truth_masks(nocs_tree):
    item = NocsTestDataset(nocs_tree.root, "real", detections="ground_truth")[0]
    np.testing.assert_array_equal(item["pred_class_ids"], [1, 6])
    np.testing.assert_array_equal(item["pred_bboxes"], [[40, 50, 70, 78], [60, 100, 85, 130]])
    np.testing.assert_array_equal(item["pred_scores"], [1.0, 1.0])
    assert item["pts"].shape == (2, 1024, 3)


def test_housecat_test_dataset(housecat_tree):
    path = housecat_tree / "test_scene1/labels/000001_label.pkl"
    label = read_pickle(path)
    label["bboxes"][1] = [0, 0, 10, 10]  # instance 2's window holds none of its pixels: dropped (P14)
    write_pickle_atomic(path, label)
    dataset = HouseCat6DTestDataset(housecat_tree)
    assert [item["result_name"] for item in dataset] == ["test_scene1/000000.pkl", "test_scene1/000001.pkl"]
    first, second = dataset[0], dataset[1]
    np.testing.assert_array_equal(first["pred_class_ids"], label["class_ids"])
    np.testing.assert_array_equal(first["pred_scores"], np.ones(2, np.float32))
    assert first["pts"].shape == (2, 1024, 3)
    np.testing.assert_array_equal(second["pred_class_ids"], label["class_ids"][:1])
    np.testing.assert_array_equal(second["pred_bboxes"], label["bboxes"][:1])
    assert second["pts"].shape == (1, 1024, 3) and len(second["gt_class_ids"]) == 2
    assert dataset.skips.counts()["empty_instance"] >= 1


def test_mug_relabel_option_hand_values(nocs_tree):
    # Mug (instance 2): R = I, scale 0.15; meta shift (0.1, 0, -0.05), scale 0.75:
    # t' = t - 0.15 * (0.1, 0, -0.05) = t - (0.015, 0, -0.0075); s' = 0.15 / 0.75 = 0.2.
    write_pickle_atomic(
        nocs_tree.root / "obj_models/mug_meta.pkl",
        {"mug_b": [np.array([0.1, 0.0, -0.05]), 0.75], "other": [np.zeros(3), 1.0]},
    )
    seed = next(s for s in range(50) if np.random.RandomState(s).randint(0, 2) == 1)
    label = read_pickle(nocs_tree.root / "real/train/scene_1/0000_label.pkl")
    plain = NocsTrainingDataset(nocs_tree.root, "real")
    relabeled = NocsTrainingDataset(nocs_tree.root, "real", relabel_mugs=True)
    a = plain.build_sample(0, np.random.RandomState(seed), torch.Generator().manual_seed(0))
    b = relabeled.build_sample(0, np.random.RandomState(seed), torch.Generator().manual_seed(0))
    assert a["category_label"].item() == b["category_label"].item() == 5
    np.testing.assert_array_equal(a["translation_label"].numpy(), label["translations"][1])
    np.testing.assert_allclose(
        b["translation_label"].numpy(), label["translations"][1] - [0.015, 0.0, -0.0075], atol=1e-7
    )
    np.testing.assert_allclose(b["size_label"].numpy(), 0.2 * label["sizes"][1], rtol=1e-6)
    np.testing.assert_allclose(a["size_label"].numpy(), 0.15 * label["sizes"][1], rtol=1e-6)
    assert torch.equal(a["pts"], b["pts"]) and not torch.allclose(a["qo"], b["qo"])


def test_mixed_batches_zip_loaders(nocs_tree):
    camera = DataLoader(NocsTrainingDataset(nocs_tree.root, "camera", 6), batch_size=3, drop_last=True)
    real = DataLoader(NocsTrainingDataset(nocs_tree.root, "real", 4), batch_size=1, drop_last=True)
    batches = list(mixed_batches(camera, real))
    assert len(batches) == 2  # the shorter loader (CAMERA: 2 batches) ends the epoch
    first_camera = next(iter(camera))
    assert torch.equal(batches[0]["pts"][:3], first_camera["pts"]) and batches[0]["pts"].shape[0] == 4
