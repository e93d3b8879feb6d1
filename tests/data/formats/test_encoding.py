"""Round trips and error paths of the file-boundary codecs (oracles: hand-coded bytes, float64 formulas)."""

import os
import pickle

import cv2
import numpy as np
import pytest

from cleanpose.data.formats import encoding
from cleanpose.errors import DataFormatError


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _hidden_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


# ---------------------------------------------------------------- depth


def test_decode_depth_camera_rule_by_hand():
    # (B, G, R) pixels: 1000 mm = 3*256 + 232; 32001 = 125*256 + 1 (background); max 65535.
    array = np.array([[[7, 3, 232], [0, 125, 1], [9, 255, 255]]], dtype=np.uint8)
    depth = encoding.decode_depth(array, "x.png")
    assert depth.dtype == np.uint16
    np.testing.assert_array_equal(depth, [[1000, 0, 65535]])


def test_decode_depth_uint16_passthrough_and_errors():
    array = np.array([[0, 1, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(encoding.decode_depth(array, "a.png"), array)
    with pytest.raises(DataFormatError, match=r"bad\.png: depth image has shape \(1, 3\) and dtype uint8"):
        encoding.decode_depth(array.astype(np.uint8), "bad.png")
    with pytest.raises(DataFormatError, match=r"two\.png: 3-dim depth image .* 2 channels"):
        encoding.decode_depth(np.zeros((2, 2, 2), np.uint8), "two.png")
    with pytest.raises(DataFormatError, match=r"f\.png: 3-dim depth image has dtype uint16"):
        encoding.decode_depth(np.zeros((2, 2, 3), np.uint16), "f.png")


def test_encode_camera_depth_bytes():
    image = encoding.encode_camera_depth(np.array([[0, 1000, 65535]]))
    np.testing.assert_array_equal(image[0, :, 0], [0, 0, 0])
    np.testing.assert_array_equal(image[0, :, 1], [125, 3, 255])
    np.testing.assert_array_equal(image[0, :, 2], [1, 232, 255])


@pytest.mark.parametrize("three_channel", [False, True])
def test_depth_round_trip(tmp_path, rng, three_channel):
    depth = rng.integers(0, 5000, size=(13, 17)).astype(np.uint16)
    depth[depth == encoding.CAMERA_DEPTH_BACKGROUND] = 0
    depth[2:5, 3:7] = 0
    path = tmp_path / "d.png"
    encoding.write_depth(path, depth, three_channel=three_channel)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.shape == ((13, 17, 3) if three_channel else (13, 17))
    np.testing.assert_array_equal(encoding.read_depth(path), depth)
    assert _hidden_files(tmp_path) == []


def test_depth_read_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r"missing\.png: depth file not found"):
        encoding.read_depth(tmp_path / "missing.png")
    good = tmp_path / "good.png"
    encoding.write_depth(good, np.full((40, 40), 700, np.uint16))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:30])
    with pytest.raises(DataFormatError, match=r"cut\.png: depth image is empty, truncated"):
        encoding.read_depth(truncated)
    gray8 = tmp_path / "gray8.png"
    cv2.imwrite(str(gray8), np.zeros((4, 4), np.uint8))
    with pytest.raises(DataFormatError, match=r"gray8\.png: depth image has shape \(4, 4\) and dtype uint8"):
        encoding.read_depth(gray8)
    with pytest.raises(ValueError, match=r"\[0, 65535\]"):
        encoding.write_depth(tmp_path / "neg.png", np.array([[-1, 2]]))


# ---------------------------------------------------------------- mask


def test_mask_round_trip_and_channel_two(tmp_path, rng):
    mask = rng.integers(0, 6, size=(9, 11)).astype(np.uint8)
    mask[mask == 0] = 255
    path = tmp_path / "m.png"
    encoding.write_mask(path, mask)
    np.testing.assert_array_equal(encoding.read_mask(path), mask)
    # A 3-channel file: the reference takes channel index 2 of the BGR read.
    three = np.stack([np.zeros_like(mask), np.full_like(mask, 77), mask], axis=2)
    cv2.imwrite(str(tmp_path / "m3.png"), three)
    np.testing.assert_array_equal(encoding.read_mask(tmp_path / "m3.png"), mask)


def test_mask_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "m16.png"), np.zeros((3, 3), np.uint16))
    with pytest.raises(DataFormatError, match=r"m16\.png: mask image has dtype uint16"):
        encoding.read_mask(tmp_path / "m16.png")
    with pytest.raises(DataFormatError, match=r"nomask\.png: mask file not found"):
        encoding.read_mask(tmp_path / "nomask.png")


# ---------------------------------------------------------------- NOCS map


def test_encode_coord_formula(rng):
    q = rng.uniform(-0.5, 0.5, size=(6, 5, 3))
    image = encoding.encode_coord(q)
    np.testing.assert_array_equal(image[:, :, 2], np.round(255 * (q[:, :, 0] + 0.5)))
    np.testing.assert_array_equal(image[:, :, 1], np.round(255 * (q[:, :, 1] + 0.5)))
    np.testing.assert_array_equal(image[:, :, 0], np.round(255 * (1 - (q[:, :, 2] + 0.5))))
    mask = np.zeros((6, 5), bool)
    mask[1, 2] = True
    masked = encoding.encode_coord(q, mask)
    assert masked[~mask].max() == 0
    np.testing.assert_array_equal(masked[1, 2], image[1, 2])


def test_coord_round_trip_within_quantization(tmp_path, rng):
    q = rng.uniform(-0.5, 0.5, size=(8, 10, 3))
    path = tmp_path / "c.png"
    encoding.write_coord(path, q)
    coord = encoding.read_coord(path)
    assert coord.dtype == np.float32
    assert coord.min() >= 0 and coord.max() <= 1
    # Half a code step: 0.5 / 255 per axis (plus float32 rounding).
    assert np.abs((coord - 0.5) - q).max() <= 0.5 / 255 + 1e-6


def test_coord_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.zeros((3, 3), np.uint8))
    with pytest.raises(DataFormatError, match=r"g\.png: NOCS coord image has shape \(3, 3\)"):
        encoding.read_coord(tmp_path / "g.png")


# ---------------------------------------------------------------- colour


def test_color_round_trip_and_bgr_on_disk(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(7, 9, 3)).astype(np.uint8)
    path = tmp_path / "rgb.png"
    encoding.write_color(path, rgb)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), rgb[:, :, ::-1])
    np.testing.assert_array_equal(encoding.read_color(path), rgb)
    # 4-channel files keep their first three channels.
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((7, 9, 1), 200, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.testing.assert_array_equal(encoding.read_color(tmp_path / "a.png"), rgb)


def test_color_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "c16.png"), np.zeros((3, 3, 3), np.uint16))
    with pytest.raises(DataFormatError, match=r"c16\.png: colour image has shape \(3, 3, 3\), dtype uint16"):
        encoding.read_color(tmp_path / "c16.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(DataFormatError, match=r"junk\.png: colour image is empty, truncated"):
        encoding.read_color(tmp_path / "junk.png")


# ---------------------------------------------------------------- meta


def test_meta_round_trip_both_layouts(tmp_path):
    rows = [
        encoding.MetaRow(1, 6, "a1b2c3", "03797390"),
        encoding.MetaRow(2, 0, "ffff", "00000000"),
        encoding.MetaRow(3, 1, "bottle_red_norm"),
    ]
    path = tmp_path / "0000_meta.txt"
    encoding.write_meta(path, rows)
    assert path.read_text() == "1 6 03797390 a1b2c3\n2 0 00000000 ffff\n3 1 bottle_red_norm\n"
    assert encoding.read_meta(path) == rows


def test_meta_errors(tmp_path):
    path = tmp_path / "bad_meta.txt"
    path.write_text("1 2 x\n\n2 3\n")
    with pytest.raises(DataFormatError, match=r"bad_meta\.txt:3: meta line has 2 fields"):
        encoding.read_meta(path)
    path.write_text("a 2 x\n")
    with pytest.raises(DataFormatError, match=r"bad_meta\.txt:1: inst_id and class_id must be integers"):
        encoding.read_meta(path)


# ---------------------------------------------------------------- pickles


def test_pickle_round_trip_deterministic_and_errors(tmp_path, rng):
    obj = {"class_ids": [1, 6], "rotations": rng.normal(size=(2, 3, 3)).astype(np.float32), "name": "x"}
    first, second = tmp_path / "a_label.pkl", tmp_path / "b_label.pkl"
    encoding.write_pickle_atomic(first, obj)
    encoding.write_pickle_atomic(second, dict(obj))
    assert first.read_bytes() == second.read_bytes()
    loaded = encoding.read_pickle(first)
    assert loaded["class_ids"] == [1, 6] and loaded["name"] == "x"
    np.testing.assert_array_equal(loaded["rotations"], obj["rotations"])
    cut = tmp_path / "cut_label.pkl"
    cut.write_bytes(first.read_bytes()[:20])
    with pytest.raises(DataFormatError, match=r"cut_label\.pkl: not a readable pickle"):
        encoding.read_pickle(cut)
    with pytest.raises(DataFormatError, match=r"gone\.pkl: pickle file not found"):
        encoding.read_pickle(tmp_path / "gone.pkl")
    assert _hidden_files(tmp_path) == []


def test_read_pickle_python2_bytes_as_latin1(tmp_path):
    # Protocol-2 pickle of a py2 str (SHORT_BINSTRING) with a non-ASCII byte, as Python 2 writes it.
    data = b"\x80\x02U\x02\xe9a."
    (tmp_path / "py2.pkl").write_bytes(data)
    assert encoding.read_pickle(tmp_path / "py2.pkl") == "\xe9a"
    assert pickle.loads(data, encoding="latin1") == "\xe9a"


def test_failed_write_leaves_no_temp_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise TypeError("no")

    with pytest.raises(TypeError):
        encoding.write_pickle_atomic(tmp_path / "x.pkl", Unpicklable())
    assert os.listdir(tmp_path) == []
