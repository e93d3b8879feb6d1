"""Decoded colour/mask cache: entries equal the PNG readers' arrays, samples stay bit-identical, stale and
damaged entries are decoded again."""

import logging
import os

import numpy as np
import pytest
import torch

from cleanpose.data.build import build_training_datasets
from cleanpose.data.datasets import HouseCat6DTrainingDataset, NocsTrainingDataset
from cleanpose.data.decoded_cache import DecodedFrameCache
from cleanpose.data.depth_cache import FilledDepthCache
from cleanpose.data.formats.encoding import read_color, read_mask, write_mask
from cleanpose.errors import DataFormatError
from tests.data.test_build import _config


def _entries(folder, kind="*"):
    return sorted(folder.glob(f"{kind}_*.npy"))


def _assert_same_samples(expected, got):
    assert expected.keys() == got.keys()
    for key in expected:
        assert expected[key].dtype == got[key].dtype, key
        assert torch.equal(expected[key], got[key]), key


@pytest.mark.parametrize("source", ["real", "camera"])
def test_cached_reads_equal_decoded_images(nocs_tree, tmp_path, source):
    prefix = nocs_tree.root / source / (nocs_tree.real_train if source == "real" else nocs_tree.camera_train)[0]
    color_file, mask_file = f"{prefix}_color.png", f"{prefix}_mask.png"
    cache = DecodedFrameCache(tmp_path / "decoded")
    for _ in range(2):  # cold (decode and write), then warm (memory map)
        for read, cached in ((read_color, cache.color(color_file)), (read_mask, cache.mask(mask_file))):
            expected = read(color_file if read is read_color else mask_file)
            assert cached.dtype == expected.dtype and cached.shape == expected.shape
            np.testing.assert_array_equal(cached, expected)
    assert isinstance(cache.color(color_file), np.memmap) and not cache.color(color_file).flags.writeable
    assert len(_entries(tmp_path / "decoded", "colour")) == len(_entries(tmp_path / "decoded", "mask")) == 1


@pytest.mark.parametrize("source", ["real", "camera"])
def test_training_samples_bit_identical(nocs_tree, tmp_path, source):
    """Every key of several samples equals the uncached sample, with the cache cold and then warm."""
    plain = NocsTrainingDataset(nocs_tree.root, source, 5, seed=3)
    expected = [plain[index] for index in range(len(plain))]
    for depth_cache in (None, FilledDepthCache(tmp_path / "depth")):
        cached = NocsTrainingDataset(
            nocs_tree.root,
            source,
            5,
            seed=3,
            depth_cache=depth_cache,
            decoded_cache=DecodedFrameCache(tmp_path / "decoded"),
        )
        for _ in range(2):
            for index in range(len(cached)):
                _assert_same_samples(expected[index], cached[index])
    assert len(_entries(tmp_path / "decoded", "mask")) == 2  # both frames of the source, written once


def test_housecat_training_samples_bit_identical(housecat_tree, tmp_path):
    plain = HouseCat6DTrainingDataset(housecat_tree, seed=1)
    cached = HouseCat6DTrainingDataset(housecat_tree, seed=1, decoded_cache=DecodedFrameCache(tmp_path / "d"))
    for _ in range(2):
        for index in range(len(plain)):
            _assert_same_samples(plain[index], cached[index])


def test_edited_source_is_decoded_again(nocs_tree, tmp_path):
    mask_file = nocs_tree.root / f"real/{nocs_tree.real_train[0]}_mask.png"
    cache = DecodedFrameCache(tmp_path / "decoded")
    np.testing.assert_array_equal(cache.mask(mask_file), read_mask(mask_file))
    edited = np.full((nocs_tree.height, nocs_tree.width), 7, np.uint8)
    write_mask(mask_file, edited)
    os.utime(mask_file, ns=(1, 1))  # a new modification time even on a coarse clock
    np.testing.assert_array_equal(cache.mask(mask_file), edited)
    assert len(_entries(tmp_path / "decoded", "mask")) == 2


def _damage(entry, how):
    data = entry.read_bytes()
    if how == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif how == "header":
        entry.write_bytes(b"not an npy file" + data[15:])
    elif how == "dtype":
        np.save(entry, np.zeros((4, 4), np.float32))
    else:  # a complete array of the wrong dimensionality
        np.save(entry, np.zeros((4, 4, 4), np.uint8))


@pytest.mark.parametrize("how", ["truncated", "header", "dtype", "shape"])
def test_damaged_entry_is_decoded_again(nocs_tree, tmp_path, caplog, how):
    color_file = nocs_tree.root / f"real/{nocs_tree.real_train[0]}_color.png"
    cache = DecodedFrameCache(tmp_path / "decoded")
    cache.color(color_file)
    (entry,) = _entries(tmp_path / "decoded", "colour")
    _damage(entry, how)
    with caplog.at_level(logging.WARNING, logger="cleanpose.data.decoded_cache"):
        np.testing.assert_array_equal(cache.color(color_file), read_color(color_file))
    assert str(entry) in caplog.text and "decoding again" in caplog.text
    rewritten = cache.color(color_file)  # the entry was rewritten: a memory map again
    assert isinstance(rewritten, np.memmap)
    np.testing.assert_array_equal(rewritten, read_color(color_file))


def test_missing_and_unreadable_sources(nocs_tree, tmp_path):
    cache = DecodedFrameCache(tmp_path / "decoded")
    missing = nocs_tree.root / "real/train/scene_1/9999_mask.png"
    with pytest.raises(DataFormatError, match=r"9999_mask.png: mask file not found"):
        cache.mask(missing)
    bad = nocs_tree.root / f"real/{nocs_tree.real_train[0]}_color.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    with pytest.raises(DataFormatError, match=r"0000_color.png: colour image is empty, truncated"):
        cache.color(bad)
    assert _entries(tmp_path / "decoded") == []
    # The dataset skips the unreadable colour image as without the cache: same samples, same counts.
    plain = NocsTrainingDataset(nocs_tree.root, "real", 4, seed=2)
    cached = NocsTrainingDataset(nocs_tree.root, "real", 4, seed=2, decoded_cache=cache)
    for index in range(4):
        _assert_same_samples(plain[index], cached[index])
    assert plain.skips.counts() == cached.skips.counts() and cached.skips.counts()["unreadable_color"] >= 1


def test_config_key_builds_shared_cache(nocs_tree, tmp_path):
    data = {"root": str(nocs_tree.root), "images_per_epoch": [2, 2], "decoded_cache_dir": str(tmp_path / "dc")}
    camera, real = build_training_datasets(_config(tmp_path, data))
    assert camera.decoded_cache is real.decoded_cache and camera.decoded_cache.cache_dir == tmp_path / "dc"
    data = {"root": str(nocs_tree.root), "sources": ["real"], "batch_sizes": [1], "images_per_epoch": [2]}
    (default,) = build_training_datasets(_config(tmp_path, data))
    assert default.decoded_cache.cache_dir is None
