"""`cleanpose predict` / `Predictor` on synthetic frames with a briefly trained checkpoint.

Oracles: the result pickles of `cleanpose test` on the same frames and masks, box corners rebuilt by
hand from R, t and size, corner pixels projected by hand, and the JSON / API round trip.
"""

import itertools
import json

import cv2
import numpy as np
import pytest
import torch

from cleanpose.cli import main
from cleanpose.config import TrainConfig, load_config
from cleanpose.data.build import build_test_dataset
from cleanpose.data.formats import nocs
from cleanpose.data.formats.encoding import read_color, read_depth, read_mask, write_color, write_depth, write_mask
from cleanpose.data.formats.segmentation import read_segmentation_result
from cleanpose.engine.predict import Frame, Predictor, generators_of_test_image
from cleanpose.engine.predict_io import read_labels
from cleanpose.engine.test import predict_dataset
from cleanpose.engine.train import train
from cleanpose.errors import DataFormatError
from cleanpose.models import load_checkpoint
from tests.engine.conftest import write_train_config

FRAME = "real/test/scene_2/0000"  # five objects


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    """A checkpoint trained for two steps, and its config."""
    folder = tmp_path_factory.mktemp("predict")
    path = write_train_config(synth_root, folder, run={"epochs": 1, "iterations_per_epoch": 2})
    config = load_config(path, TrainConfig)
    return train(config, quiet=True), config


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor.from_checkpoint(trained[0], device="cpu")


def _frame_files(root, prefix=FRAME):
    return (
        nocs.frame_path(root, prefix, "_color.png"),
        nocs.frame_path(root, prefix, "_depth.png"),
        nocs.frame_path(root, prefix, "_mask.png"),
        nocs.frame_path(root, prefix, "_meta.txt"),
    )


def _frame_arrays(root, prefix=FRAME):
    rgb, depth, mask, meta = _frame_files(root, prefix)
    return read_color(rgb), read_depth(depth), read_mask(mask), read_labels(meta)


def test_predict_equals_cleanpose_test_on_the_same_frames_and_masks(trained, predictor, synth_root, tmp_path):
    checkpoint, config = trained
    dataset = build_test_dataset(
        synth_root,
        "real",
        masks="segmentation",
        image_size=config.data.image_size,
        num_points=config.data.num_points,
        seed=config.run.seed,
    )
    results = predict_dataset(
        load_checkpoint(checkpoint),
        dataset,
        tmp_path / "results",
        device=torch.device("cpu"),
        seed=config.run.seed,
        quiet=True,
    )
    assert (predictor.image_size, predictor.num_points) == (28, 48)
    compared = 0
    for index, result in enumerate(results):
        segmentation = read_segmentation_result(dataset.result_files[index])
        rgb, depth, _, _ = _frame_arrays(synth_root, segmentation.frame_prefix)
        rng, queue_state = generators_of_test_image(config.run.seed, index)
        objects = predictor(
            rgb,
            depth,
            nocs.REAL_INTRINSICS,
            [segmentation.pred_masks[:, :, j] for j in range(len(segmentation))],
            [nocs.CATEGORY_NAMES[c - 1] for c in segmentation.pred_class_ids],
            boxes=segmentation.pred_bboxes,
            scores=segmentation.pred_scores,
            rng=rng,
            queue_random_state=queue_state,
        )
        posed = [pose for pose in objects if pose.ok]
        assert len(posed) == len(result["pred_RTs"]) > 0
        for pose, matrix, scales, score in zip(
            posed, result["pred_RTs"], result["pred_scales"], result["pred_scores"], strict=True
        ):
            norm = np.linalg.norm(pose.size)
            np.testing.assert_allclose(pose.translation, matrix[:3, 3], atol=1e-6)
            np.testing.assert_allclose(pose.rotation * norm, matrix[:3, :3], atol=1e-6)
            np.testing.assert_allclose(pose.size / norm, scales, atol=1e-6)
            assert pose.score == pytest.approx(float(score))
            compared += 1
    assert compared >= 8


def test_corners_follow_rotation_translation_and_size(predictor, synth_root):
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    objects = predictor(rgb, depth, nocs.REAL_INTRINSICS, mask, labels)
    assert [pose.instance for pose in objects] == sorted(labels) and all(pose.ok for pose in objects)
    for pose in objects:
        rotation, translation, size = pose.rotation, pose.translation, pose.size
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
        # Every corner R·(±sx/2, ±sy/2, ±sz/2) + t, built by hand, is one of the returned corners.
        expected = [
            translation
            + sum(
                sign * half * rotation[:, axis] for axis, (sign, half) in enumerate(zip(signs, size / 2, strict=True))
            )
            for signs in itertools.product((1, -1), repeat=3)
        ]
        for corner in expected:
            assert np.min(np.linalg.norm(pose.corners - corner, axis=1)) < 1e-9
        np.testing.assert_allclose(pose.corners.mean(axis=0), translation, atol=1e-9)
        # The JSON corner order: signs (+,+,+) (+,+,-) (-,+,+) (-,+,-) (+,-,+) (+,-,-) (-,-,+) (-,-,-).
        order = [(1, 1, 1), (1, 1, -1), (-1, 1, 1), (-1, 1, -1), (1, -1, 1), (1, -1, -1), (-1, -1, 1), (-1, -1, -1)]
        for corner, signs in zip(pose.corners, order, strict=True):
            np.testing.assert_allclose(corner, translation + rotation @ (np.array(signs) * size / 2), atol=1e-12)
        assert pose.num_points > 16


def _changed_pixels(overlay_bgr, rgb):
    return np.any(overlay_bgr != cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), axis=2)


@pytest.mark.parametrize("graph_flag", [[], ["--cuda-graph"]])  # on the CPU the flag runs the network itself
def test_cli_writes_schema_and_overlay_and_equals_the_python_api(trained, predictor, synth_root, tmp_path, graph_flag):
    rgb_path, depth_path, mask_path, meta_path = _frame_files(synth_root)
    status = main(
        [
            "--quiet",
            "predict",
            *graph_flag,
            "--checkpoint",
            str(trained[0]),
            "--rgb",
            str(rgb_path),
            "--depth",
            str(depth_path),
            "--masks",
            str(mask_path),
            "--labels",
            str(meta_path),
            "--intrinsics",
            "591.0125,590.16775,322.525,244.11084",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert status == 0
    document = json.loads((tmp_path / "out/poses.json").read_text())
    assert (document["format"], document["version"]) == ("cleanpose.poses", 1)
    assert set(document["conventions"]) >= {"rotation", "translation", "size", "corners", "num_points"}
    assert document["frame"]["width"] == 640 and document["frame"]["height"] == 480
    np.testing.assert_array_equal(document["frame"]["intrinsics"], nocs.REAL_INTRINSICS)
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    objects = predictor(rgb, depth, nocs.REAL_INTRINSICS, mask, labels)
    assert len(document["objects"]) == len(objects) == 5
    for record, pose in zip(document["objects"], objects, strict=True):
        assert set(record) == {
            "instance",
            "category",
            "score",
            "status",
            "reason",
            "detail",
            "num_points",
            "rotation",
            "translation",
            "size",
            "corners",
        }
        assert (record["instance"], record["category"], record["status"]) == (pose.instance, pose.category, "ok")
        assert record["num_points"] == pose.num_points and record["reason"] is None
        for key in ("rotation", "translation", "size", "corners"):
            np.testing.assert_array_equal(np.array(record[key]), getattr(pose, key))  # identical, not just close

    overlay = cv2.imread(str(tmp_path / "out/overlay.png"))
    assert overlay.shape == rgb.shape
    changed = _changed_pixels(overlay, rgb)
    assert changed.sum() > 500
    for pose in objects:  # each projected corner (by hand: K·X / z) is drawn over
        if not np.all(pose.corners[:, 2] > 0):
            continue
        for corner in pose.corners:
            u = nocs.REAL_INTRINSICS[0, 0] * corner[0] / corner[2] + nocs.REAL_INTRINSICS[0, 2]
            v = nocs.REAL_INTRINSICS[1, 1] * corner[1] / corner[2] + nocs.REAL_INTRINSICS[1, 2]
            column, row = int(round(u)), int(round(v))
            if 0 <= row < 480 and 0 <= column < 640:
                assert changed[row, column]


def test_segmentation_pickle_masks_from_the_cli_equal_the_api(trained, predictor, synth_root, tmp_path):
    dataset = build_test_dataset(synth_root, "real", masks="segmentation", image_size=28, num_points=48, seed=5)
    pickle_path = dataset.result_files[0]
    segmentation = read_segmentation_result(pickle_path)
    rgb_path, depth_path, _, _ = _frame_files(synth_root, segmentation.frame_prefix)
    assert (
        main(
            [
                "--quiet",
                "predict",
                "--checkpoint",
                str(trained[0]),
                "--rgb",
                str(rgb_path),
                "--depth",
                str(depth_path),
                "--masks",
                str(pickle_path),
                "--intrinsics",
                "nocs-real",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    records = json.loads((tmp_path / "poses.json").read_text())["objects"]
    objects = predictor(
        read_color(rgb_path),
        read_depth(depth_path),
        nocs.REAL_INTRINSICS,
        [segmentation.pred_masks[:, :, j] for j in range(len(segmentation))],
        [nocs.CATEGORY_NAMES[c - 1] for c in segmentation.pred_class_ids],
        boxes=segmentation.pred_bboxes,
        scores=segmentation.pred_scores,
    )
    assert [record["score"] for record in records] == pytest.approx(segmentation.pred_scores.tolist())
    for record, pose in zip(records, objects, strict=True):
        assert record["status"] == ("ok" if pose.ok else "skipped")
        if pose.ok:
            np.testing.assert_array_equal(np.array(record["translation"]), pose.translation)


def test_empty_and_sparse_masks_come_back_with_a_reason(predictor, synth_root):
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    first = min(labels)
    sparse = np.zeros(mask.shape, bool)
    rows, cols = np.nonzero((mask == first) & (depth > 0))
    sparse[rows[:10], cols[:10]] = True  # 10 usable pixels: at most 16 is too few (the test rule)
    objects = predictor(
        rgb, depth, nocs.REAL_INTRINSICS, [mask == first, np.zeros(mask.shape, bool), sparse], [labels[first]] * 3
    )
    assert [pose.reason for pose in objects] == [None, "empty_mask", "few_points"]
    assert objects[1].num_points == 0 and objects[2].num_points == 10 and objects[2].rotation is None
    assert "10 valid depth pixels" in objects[2].detail


def test_frames_in_one_batch_equal_frames_one_by_one(predictor, synth_root):
    frames = []
    for prefix in ("real/test/scene_1/0000", "real/test/scene_2/0001"):
        rgb, depth, mask, labels = _frame_arrays(synth_root, prefix)
        frames.append(Frame(rgb, depth, nocs.REAL_INTRINSICS, mask, labels, name=prefix))
    together = predictor.predict_frames(frames)
    for frame, batch_poses in zip(frames, together, strict=True):
        alone = predictor.predict_frames([frame])[0]
        for a, b in zip(alone, batch_poses, strict=True):
            np.testing.assert_allclose(a.translation, b.translation, atol=1e-5)
            np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-5)


def test_metric_depth_and_other_scales_give_the_same_poses(predictor, synth_root):
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    millimetres = predictor(rgb, depth, nocs.REAL_INTRINSICS, mask, labels)
    metres = predictor(rgb, depth.astype(np.float64) / 1000.0, nocs.REAL_INTRINSICS, mask, labels)
    tenths = predictor(rgb, (depth.astype(np.uint32) * 10), nocs.REAL_INTRINSICS, mask, labels, depth_scale=10000.0)
    for a, b, c in zip(millimetres, metres, tenths, strict=True):
        np.testing.assert_allclose(b.translation, a.translation, atol=1e-5)
        np.testing.assert_allclose(c.translation, a.translation, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.update(depth=f["depth"][:-8]), r"colour image is 640x480 but depth is 640x472"),
        (lambda f: f.update(depth=(f["depth"] // 1000).astype(np.uint16)), r"metres stored as integers"),
        (lambda f: f.update(depth=f["depth"].astype(np.float32)), r"looks like millimetres"),
        (lambda f: f.update(intrinsics=np.array([[500.0, 0, 700], [0, 500, 240], [0, 0, 1]])), r"do not fit a 640x480"),
        (lambda f: f.update(categories={key: "teapot" for key in f["categories"]}), r"\['teapot'\] are not known"),
        (
            lambda f: f.update(categories=list(f["categories"].values())[:2]),
            r"holds [3-9] instance ids \[1, 2, 3(, [4-9])*\] but 2 categories",
        ),  # the frame's ids, listed
    ],
)
def test_bad_inputs_are_named_errors(predictor, synth_root, change, message):
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    inputs = {"rgb": rgb, "depth": depth, "intrinsics": nocs.REAL_INTRINSICS, "masks": mask, "categories": labels}
    change(inputs)
    with pytest.raises(DataFormatError, match=message):
        predictor(**inputs)


def test_corrupt_png_and_folder_runs(trained, synth_root, tmp_path, capsys):
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    for folder, data in (("rgb", rgb), ("depth", depth), ("masks", mask)):
        (tmp_path / "frames" / folder).mkdir(parents=True)
        for name in ("a", "b"):
            {"rgb": write_color, "depth": write_depth, "masks": write_mask}[folder](
                tmp_path / "frames" / folder / f"{name}.png", data
            )
    (tmp_path / "labels.json").write_text(json.dumps({str(key): value for key, value in labels.items()}))
    arguments = [
        "--quiet",
        "predict",
        "--checkpoint",
        str(trained[0]),
        "--intrinsics",
        "nocs-real",
        "--labels",
        str(tmp_path / "labels.json"),
    ]
    assert main(arguments + ["--frames", str(tmp_path / "frames"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert [frame["name"] for frame in summary["frames"]] == ["a", "b"] and summary["objects"] == {"ok": 10}
    first = json.loads((tmp_path / "out/a.json").read_text())
    second = json.loads((tmp_path / "out/b.json").read_text())
    assert first["objects"] == second["objects"] and (tmp_path / "out/b_overlay.png").is_file()

    broken = tmp_path / "frames/rgb/a.png"
    broken.write_bytes(broken.read_bytes()[:50])
    status = main(
        arguments
        + [
            "--rgb",
            str(broken),
            "--depth",
            str(tmp_path / "frames/depth/a.png"),
            "--masks",
            str(tmp_path / "frames/masks/a.png"),
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert status == 2 and f"{broken}: colour image is empty, truncated" in capsys.readouterr().err


def test_import_cleanpose_stays_light_and_exports_predictor():
    import subprocess
    import sys

    code = (
        "import sys, cleanpose; assert 'torch' not in sys.modules, 'torch imported'; "
        "from cleanpose import Predictor; assert Predictor.__module__ == 'cleanpose.engine.predict'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": ":".join(sys.path)})


def test_official_checkpoint_is_converted_in_memory(tmp_path):
    from cleanpose.config import ModelConfig, RgbBackboneConfig
    from cleanpose.models.convert_checkpoint import ours_to_official
    from cleanpose.models.net import CleanPoseNet

    config = ModelConfig(rgb_backbone="resnet", rgb=RgbBackboneConfig(random_init=True))
    source = CleanPoseNet(config, load_rgb_weights=False)
    state = {key: value for key, value in source.state_dict().items() if not key.startswith("queue.")}
    torch.save(ours_to_official(state, config), tmp_path / "official.pth")
    official = Predictor.from_checkpoint(tmp_path / "official.pth", device="cpu", num_points=256)
    assert (official.image_size, official.num_points) == (224, 256)  # the reference's crop, the override
    assert official.categories == nocs.CATEGORY_NAMES
    loaded = official.model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_folder_of_nocs_frames_with_segmentation_pickles(trained, synth_root, tmp_path):
    results = synth_root / "results/nocs_results/real_test"
    assert (
        main(
            [
                "--quiet",
                "predict",
                "--checkpoint",
                str(trained[0]),
                "--intrinsics",
                "nocs-real",
                "--frames",
                str(synth_root / "real/test"),
                "--segmentation",
                str(results),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = [frame["name"] for frame in summary["frames"]]
    assert names == ["scene_1_0000", "scene_1_0001", "scene_2_0000", "scene_2_0001"]
    for name in names:
        segmentation = read_segmentation_result(results / f"results_test_{name}.pkl")
        records = json.loads((tmp_path / f"{name}.json").read_text())["objects"]
        assert [record["score"] for record in records] == pytest.approx(segmentation.pred_scores.tolist())
        assert [record["category"] for record in records] == [
            nocs.CATEGORY_NAMES[c - 1] for c in segmentation.pred_class_ids
        ]
    assert summary["objects"]["ok"] + summary["objects"].get("skipped", 0) == sum(
        len(read_segmentation_result(path)) for path in results.glob("results_*.pkl")
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_tracks_fp32(trained, predictor, synth_root, precision):
    reduced = Predictor.from_checkpoint(trained[0], device="cpu", precision=precision)
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    for full, low in zip(
        predictor(rgb, depth, nocs.REAL_INTRINSICS, mask, labels),
        reduced(rgb, depth, nocs.REAL_INTRINSICS, mask, labels),
        strict=True,
    ):
        np.testing.assert_allclose(low.translation, full.translation, atol=0.02)
        np.testing.assert_allclose(low.size, full.size, rtol=0.1)


def _assert_same_poses(got, expected):
    """Every object's reason and pose fields equal, bit for bit."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.instance, a.category, a.reason, a.num_points) == (b.instance, b.category, b.reason, b.num_points)
        for name in ("rotation", "translation", "size", "corners"):
            if getattr(b, name) is None:
                assert getattr(a, name) is None, name
            else:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_cuda_graph_option_falls_back_to_the_network_on_the_cpu(trained, predictor, synth_root):
    fallback = Predictor.from_checkpoint(trained[0], device="cpu", cuda_graph=True)
    assert fallback.graphed is None and predictor.graphed is None
    rgb, depth, mask, labels = _frame_arrays(synth_root)
    expected = predictor(rgb, depth, nocs.REAL_INTRINSICS, mask, labels)
    assert any(pose.rotation is not None for pose in expected)
    _assert_same_poses(fallback(rgb, depth, nocs.REAL_INTRINSICS, mask, labels), expected)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_poses_equal_the_plain_network_on_cuda(trained, synth_root, precision):
    plain = Predictor.from_checkpoint(trained[0], device="cuda", precision=precision)
    graphed = Predictor.from_checkpoint(trained[0], device="cuda", precision=precision, cuda_graph=True)
    frames = [_frame_arrays(synth_root, prefix) for prefix in ("real/test/scene_1/0000", FRAME)]
    for rgb, depth, mask, labels in frames * 2:  # the repeat replays the graphs captured in the first pass
        expected = plain(rgb, depth, nocs.REAL_INTRINSICS, mask, labels)
        _assert_same_poses(graphed(rgb, depth, nocs.REAL_INTRINSICS, mask, labels), expected)
    assert graphed.graphed is not None and len(graphed.graphed.keys) >= 1
