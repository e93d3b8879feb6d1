"""`prepare` end to end: synthetic raw NOCS downloads → prepared tree → the readers, checked against
the synthetic ground truth written by `generate` with the same seed; resume, workers and bad input."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cleanpose.cli import main
from cleanpose.data.check import check_dataset
from cleanpose.data.formats import encoding, nocs
from cleanpose.data.prepare import prepare
from cleanpose.data.prepare.pipeline import REPORT_FILE
from cleanpose.data.synth import generate
from cleanpose.data.synth.generate import split_intrinsics
from cleanpose.errors import ConfigError, DataFormatError, OutputError

SIZE = (320, 240)
SEED = 4
SPLITS = ("camera_train", "camera_val", "real_train", "real_test")
INTRINSICS = {split.split("_")[0]: split_intrinsics("nocs", split, SIZE, SEED, 0) for split in SPLITS}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("prepare")
    common = {
        "scenes": 1,
        "frames_per_scene": 2,
        "seed": SEED,
        "image_size": SIZE,
        "instances_per_category": 1,
        "progress": False,
    }
    generate(base / "truth", **common)
    generate(base / "raw", raw=True, **common)
    summary = prepare(base / "raw", base / "out", intrinsics=INTRINSICS, progress=False)
    return base, summary


def _angle(a, b):
    return np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)))


@pytest.mark.parametrize("source", ["camera", "real"])
def test_labels_agree_with_the_synthetic_ground_truth(trees, source):
    base, _ = trees
    truth, out = base / "truth", base / "out"
    frames = nocs.train_frames(out, source)
    assert frames == nocs.train_frames(truth, source) and frames
    for prefix in frames:
        expected, got = nocs.read_label(f"{truth}/{prefix}_label.pkl"), nocs.read_label(f"{out}/{prefix}_label.pkl")
        np.testing.assert_array_equal(got.instance_ids, expected.instance_ids)
        np.testing.assert_array_equal(got.class_ids, expected.class_ids)
        np.testing.assert_array_equal(got.bboxes, expected.bboxes)
        assert got.model_names == expected.model_names
        np.testing.assert_allclose(got.sizes, expected.sizes, atol=1e-5)  # bbox.txt is written with 6 decimals
        for i in range(len(got)):
            assert _angle(expected.rotations[i].astype(float), got.rotations[i].astype(float)) <= 1.0
            assert np.linalg.norm(expected.translations[i] - got.translations[i]) <= 0.002
            assert got.scales[i] == pytest.approx(expected.scales[i], rel=0.01)
        for suffix in ("_color.png", "_depth.png", "_mask.png", "_coord.png", "_meta.txt"):
            assert Path(f"{out}/{prefix}{suffix}").read_bytes() == Path(f"{truth}/{prefix}{suffix}").read_bytes()
        depth = nocs.depth_path(out, prefix)
        assert depth.read_bytes() == nocs.depth_path(truth, prefix).read_bytes()


def test_lists_models_and_test_files_as_the_readers_expect(trees):
    base, summary = trees
    out, raw = base / "out", base / "raw"
    assert (out / "camera" / "train_list_all.txt").read_text() == "".join(f"train/00000/{i:04d}\n" for i in range(10))
    assert (out / "real" / "test_list_all.txt").read_text() == "test/scene_1/0000\ntest/scene_1/0001\n"
    assert summary.frames == {"camera_train": 10, "camera_val": 10, "real_train": 2, "real_test": 2}
    assert summary.skipped["camera_train"] == 8  # 8 of the 10 listed CAMERA frames do not exist
    for split in SPLITS:
        points = nocs.read_models(out / "obj_models" / f"{split}.pkl")
        assert len(points) == 6
        for name, cloud in points.items():
            assert cloud.shape == (1024, 3)
            assert np.linalg.norm(2 * np.abs(cloud).max(axis=0)) <= 1.0 + 1e-5 or "mug" not in name
    mugs = nocs.read_mug_meta(out / "obj_models" / "mug_meta.pkl")
    assert len(mugs) == 4  # one mug per split
    gts = sorted(p.name for p in (out / "gts" / "real_test").iterdir())
    assert gts == sorted(p.name for p in (raw / "gts" / "real_test").iterdir()) and len(gts) == 2
    report = check_dataset(out, format="nocs", progress=False)
    assert not report.errors, report.lines()


def test_report_names_skips_with_reasons(trees):
    base, _ = trees
    report = json.loads((base / "out" / REPORT_FILE).read_text())
    reasons = report["splits"]["camera_train"]["skip_reasons"]
    assert reasons == {"missing files: _color.png, _coord.png, _depth.png, _mask.png, _meta.txt": 8}
    assert {entry["frame"] for entry in report["skipped_frames"] if entry["split"] == "camera_train"} == {
        f"train/00000/{i:04d}" for i in range(2, 10)
    }


def _camera_raw(tmp_path):
    raw = tmp_path / "raw"
    generate(
        raw,
        scenes=1,
        frames_per_scene=2,
        seed=SEED,
        image_size=SIZE,
        instances_per_category=1,
        splits=("camera_train",),
        progress=False,
        raw=True,
    )
    return raw


def test_resume_redoes_only_missing_frames_and_workers_agree(tmp_path):
    raw = _camera_raw(tmp_path)
    out = tmp_path / "out"
    prepare(raw, out, splits=("camera_train",), intrinsics=INTRINSICS, progress=False)
    first, second = (out / "camera" / "train" / "00000" / f"{i:04d}_label.pkl" for i in range(2))
    kept_bytes, kept_inode = first.read_bytes(), first.stat().st_ino
    redone_bytes = second.read_bytes()
    second.unlink()
    with pytest.raises(OutputError, match="--resume"):
        prepare(raw, out, splits=("camera_train",), intrinsics=INTRINSICS, progress=False)
    summary = prepare(raw, out, splits=("camera_train",), resume=True, intrinsics=INTRINSICS, progress=False)
    assert summary.usable["camera_train"] == 2
    assert first.stat().st_ino == kept_inode and first.read_bytes() == kept_bytes
    assert second.read_bytes() == redone_bytes
    assert not [p for p in out.rglob("*") if p.name.endswith((".part", ".link"))]
    parallel = tmp_path / "parallel"
    prepare(raw, parallel, splits=("camera_train",), workers=2, intrinsics=INTRINSICS, progress=False)
    for path in (first, second):
        assert (parallel / path.relative_to(out)).read_bytes() == path.read_bytes()
    serial_models = encoding.read_pickle(out / "obj_models" / "camera_train.pkl")
    parallel_models = encoding.read_pickle(parallel / "obj_models" / "camera_train.pkl")
    assert list(parallel_models) == list(serial_models)
    for name, points in serial_models.items():
        np.testing.assert_array_equal(parallel_models[name], points)


def test_bad_frames_are_counted_skips(tmp_path):
    raw = _camera_raw(tmp_path)
    frame = raw / "CAMERA" / "train" / "00000"
    (frame / "0000_mask.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    meta = encoding.read_meta(frame / "0001_meta.txt")
    shutil.rmtree(raw / "obj_models" / "train" / meta[0].synset / meta[0].model)
    out = tmp_path / "out"
    summary = prepare(raw, out, splits=("camera_train",), intrinsics=INTRINSICS, progress=False)
    assert summary.usable["camera_train"] == 0
    report = json.loads((out / REPORT_FILE).read_text())
    reasons = {entry["frame"]: entry["reason"] for entry in report["skipped_frames"]}
    assert "0000_mask.png" in reasons["train/00000/0000"] and "truncated" in reasons["train/00000/0000"]
    missing = f"{meta[0].synset}/{meta[0].model}"
    assert reasons["train/00000/0001"] == f"model {missing} of instance 1 missing from obj_models"
    assert not (out / "camera" / "train" / "00000" / "0000_label.pkl").exists()
    assert (out / "camera" / "train_list.txt").read_text() == ""
    assert report["skipped_models"] == []  # the removed mesh is simply absent from the point models
    assert meta[0].model not in nocs.read_models(out / "obj_models" / "camera_train.pkl")


def test_missing_folders_are_clear_errors(tmp_path):
    raw = _camera_raw(tmp_path)
    with pytest.raises(DataFormatError, match="split real_train: raw folder missing; expected .*/real/train or"):
        prepare(raw, tmp_path / "out", splits=("real_train",), progress=False)
    shutil.rmtree(raw / "camera_full_depths")
    with pytest.raises(DataFormatError, match="composed depth folder missing"):
        prepare(raw, tmp_path / "out2", splits=("camera_train",), progress=False)
    with pytest.raises(DataFormatError, match="raw NOCS folder not found"):
        prepare(tmp_path / "nothing", tmp_path / "out3", progress=False)
    with pytest.raises(ConfigError, match="unknown split"):
        prepare(raw, tmp_path / "out4", splits=("camera_test",), progress=False)


def test_cli_prepare(tmp_path, capsys):
    raw = _camera_raw(tmp_path)
    out = tmp_path / "out"
    status = main(
        [
            "--quiet",
            "data",
            "prepare",
            "--raw",
            str(raw),
            "--out",
            str(out),
            "--splits",
            "camera_train",
            "--workers",
            "1",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "camera_train: 10 frames listed" in printed and os.path.exists(out / REPORT_FILE)
    assert main(["--quiet", "data", "prepare", "--raw", str(raw), "--out", str(out)]) == 2  # not empty, no --resume


@pytest.mark.parametrize("split, set_name", [("camera_val", "val"), ("real_test", "real_test")])
def test_test_labels_copy_the_ground_truth(trees, split, set_name):
    base, summary = trees
    out, raw = base / "out", base / "raw"
    source, subset = split.split("_")
    listed = (out / source / f"{subset}_list.txt").read_text().split()
    assert summary.labelled[split] == len(listed) == 2
    points = nocs.read_models(out / "obj_models" / f"{split}.pkl")
    for entry in listed:
        _, folder, frame = entry.split("/")
        truth = encoding.read_pickle(raw / "gts" / set_name / f"results_{set_name}_{folder}_{frame}.pkl")
        label = encoding.read_pickle(out / source / f"{entry}_label.pkl")
        meta = {row.instance_id: row for row in encoding.read_meta(out / source / f"{entry}_meta.txt")}
        for i, instance_id in enumerate(label["instance_ids"]):
            # the ground truth lists the visible class > 0 instances in meta order: find this one by its box
            j = next(k for k, box in enumerate(truth["gt_bboxes"]) if (box == label["bboxes"][i]).all())
            assert label["class_ids"][i] == truth["gt_class_ids"][j] == meta[instance_id].class_id
            assert label["handle_visibility"][i] == truth["gt_handle_visibility"][j]
            np.testing.assert_allclose(label["poses"][i], truth["gt_RTs"][j], rtol=1e-6, atol=1e-7)
            scale = np.cbrt(np.linalg.det(truth["gt_RTs"][j][:3, :3]))
            assert label["scales"][i] == pytest.approx(scale, rel=1e-6)
            np.testing.assert_allclose(label["rotations"][i], truth["gt_RTs"][j][:3, :3] / scale, atol=1e-6)
            np.testing.assert_allclose(
                label["sizes"][i], 2 * np.abs(points[label["model_list"][i]]).max(axis=0), rtol=1e-6
            )


def test_training_reader_gives_the_ground_truth_samples(tmp_path):
    """Through the training reader (native 640x480: it uses the fixed NOCS intrinsics), a prepared frame
    gives the same points and, within the label tolerances, the same targets as the synthetic truth."""
    import torch

    from cleanpose.data.datasets import NocsTrainingDataset

    common = {
        "scenes": 1,
        "frames_per_scene": 1,
        "seed": SEED,
        "instances_per_category": 1,
        "objects_range": (3, 3),
        "splits": ("camera_train", "real_train"),
        "progress": False,
    }
    generate(tmp_path / "truth", **common)
    generate(tmp_path / "raw", raw=True, **common)
    prepare(tmp_path / "raw", tmp_path / "out", splits=common["splits"], progress=False)
    for source in ("camera", "real"):
        prepared = NocsTrainingDataset(tmp_path / "out", source, num_points=256)
        truth = NocsTrainingDataset(tmp_path / "truth", source, num_points=256)
        assert prepared.frames == truth.frames
        for seed in range(3):
            got, expected = (
                dataset.build_sample(0, np.random.RandomState(seed), torch.Generator().manual_seed(seed))
                for dataset in (prepared, truth)
            )
            assert int(got["category_label"]) == int(expected["category_label"])
            torch.testing.assert_close(got["pts"], expected["pts"], rtol=0, atol=0)
            assert torch.linalg.norm(got["translation_label"] - expected["translation_label"]) <= 0.002
            torch.testing.assert_close(got["size_label"], expected["size_label"], rtol=0.01, atol=0)
            relative = got["rotation_label"].double().T @ expected["rotation_label"].double()
            assert torch.rad2deg(torch.arccos(torch.clamp((torch.trace(relative) - 1) / 2, -1, 1))) <= 1.0
