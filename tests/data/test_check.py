"""`cleanpose data check`: clean trees pass with exact counts; each problem names its file."""

import numpy as np
import pytest

from cleanpose.cli import main
from cleanpose.data.check import check_dataset, detect_format
from cleanpose.data.formats.encoding import read_pickle, write_mask, write_pickle_atomic
from cleanpose.errors import ConfigError, DataFormatError


def test_clean_nocs_tree_counts(nocs_tree):
    report = check_dataset(nocs_tree.root, progress=False)
    assert report.format == "nocs" and report.ok and not report.problems
    assert report.frames == {
        "camera/train": 2,
        "real/train": 2,
        "real/test (results/nocs_results/real_test)": 1,
        "camera/test (results/nocs_results/val)": 1,
    }
    # Each training frame has one bottle and one mug; each test frame has the same two GT objects.
    for split in report.frames:
        expected = 2 if "train" in split else 1
        assert dict(report.instances[split]) == {"bottle": expected, "mug": expected}


def test_clean_housecat_tree_counts(housecat_tree):
    report = check_dataset(housecat_tree, progress=False)
    assert report.format == "housecat6d" and report.ok
    assert report.frames == {"train": 4, "test": 2}
    assert dict(report.instances["train"]) == {"bottle": 4, "shoe": 4}


def test_problems_name_files(nocs_tree):
    root = nocs_tree.root
    (root / "real/train/scene_1/0001_color.png").unlink()
    label_path = root / "camera/train/00000/0001_label.pkl"
    label = read_pickle(label_path)
    label["model_list"][1] = "not_a_model"
    label["instance_ids"][0] = 42
    write_pickle_atomic(label_path, label)
    (root / "camera_full_depths/train/00000/0000_composed.png").unlink()
    bad_result = root / "results/nocs_results/real_test/results_test_scene_1_0001.pkl"
    bad_result.write_bytes(b"\x80\x04garbage")
    report = check_dataset(root, progress=False)
    messages = [str(problem) for problem in report.problems]
    assert any("error:" in m and "0001_color.png: colour file not found" in m for m in messages)
    assert any(
        "error:" in m and "0001_label.pkl" in m and "['not_a_model'] not in obj_models/camera_train.pkl" in m
        for m in messages
    )
    assert any("warning:" in m and "instance id(s) [42] do not occur in 0001_mask.png" in m for m in messages)
    assert any("warning:" in m and "0000_composed.png: composed depth missing" in m for m in messages)
    assert any("error:" in m and "results_test_scene_1_0001.pkl: not a readable pickle" in m for m in messages)
    assert len(report.errors) == 3 and len(report.warnings) == 2 and not report.ok


def test_size_mismatch_and_housecat_label_problem(housecat_tree):
    write_mask(housecat_tree / "scene01/instance/000001.png", np.zeros((10, 10), np.uint8))
    label = read_pickle(housecat_tree / "test_scene1/labels/000000_label.pkl")
    del label["rotations"]
    write_pickle_atomic(housecat_tree / "test_scene1/labels/000000_label.pkl", label)
    report = check_dataset(housecat_tree, "housecat6d", progress=False)
    messages = [str(problem) for problem in report.errors]
    assert any("frame images differ in size" in m and "000001.png 10x10" in m for m in messages)
    assert any("000000_label.pkl: label lacks key(s) ['rotations']" in m for m in messages)


def test_limit_and_format_errors(nocs_tree, tmp_path):
    report = check_dataset(nocs_tree.root, limit=1, progress=False)
    assert report.frames["camera/train"] == 1
    with pytest.raises(DataFormatError, match="cannot tell the dataset format"):
        detect_format(tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset format 'bop'"):
        check_dataset(nocs_tree.root, "bop")
    empty = check_dataset(tmp_path, "nocs", progress=False)
    assert not empty.ok and "no NOCS split found" in str(empty.errors[0])


def test_cli_exit_status(nocs_tree, capsys):
    assert main(["--quiet", "data", "check", str(nocs_tree.root)]) == 0
    assert "real/train: 2 frames; instances: bottle 2, mug 2" in capsys.readouterr().out
    (nocs_tree.root / "real/train/scene_1/0000_mask.png").write_bytes(b"not a png")
    assert main(["--quiet", "data", "check", str(nocs_tree.root), "--format", "nocs"]) == 1
    assert "0000_mask.png: mask image is empty, truncated or not a PNG" in capsys.readouterr().out
    assert main(["data", "check", str(nocs_tree.root / "missing")]) == 2
    assert "dataset folder does not exist" in capsys.readouterr().err
