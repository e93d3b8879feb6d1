"""Preview grid and the `cleanpose synth` command line."""

import numpy as np
import pytest

from cleanpose.cli import main
from cleanpose.data.formats import encoding
from cleanpose.data.synth import SensorNoise, write_preview
from cleanpose.data.synth.generate import scene_frames


def test_preview_rows_are_the_rendered_frames(tmp_path):
    path = write_preview(tmp_path / "p.png", frames=2, seed=4, image_size=(64, 48))
    grid = encoding.read_color(path)
    assert grid.shape == (2 * 48, 4 * 64, 3)
    for scene_index in range(2):
        arrays = next(scene_frames("nocs", "camera_train", scene_index, 1, 4, (64, 48), SensorNoise(), 6))[3]
        row = grid[scene_index * 48 : (scene_index + 1) * 48]
        np.testing.assert_array_equal(row[:, :64], arrays.color)
        seen = arrays.object_index >= 0
        np.testing.assert_array_equal(row[:, 192:][seen], np.rint((arrays.nocs[seen] + 0.5) * 255).astype(np.uint8))
        assert (row[:, 128:192][~seen] == 0).all()
        # depth: black exactly where the sensor has no depth; the nearest valid pixels get turbo's dark
        # blue end and the farthest its dark red end (the map spans the 1st-95th percentile)
        depth, depth_image = arrays.sensor_depth, row[:, 64:128].astype(int)
        assert ((depth_image.sum(axis=2) == 0) == (depth <= 0)).all()
        valid = depth > 0
        assert (depth_image[depth == depth[valid].min()] == [48, 18, 59]).all()
        assert (depth_image[depth == depth[valid].max()][:, 0] > 100).all()


def test_cli_synth_and_errors(tmp_path, capsys):
    out = tmp_path / "hc"
    status = main(
        [
            "--quiet",
            "synth",
            "--out",
            str(out),
            "--format",
            "housecat6d",
            "--scenes",
            "1",
            "--frames-per-scene",
            "1",
            "--splits",
            "test",
            "--image-size",
            "64x50",
            "--no-noise",
        ]
    )
    assert status == 0
    assert "wrote 1 frames" in capsys.readouterr().out
    assert (out / "test_scene1" / "rgb" / "000000.png").exists()
    assert main(["synth", "--out", str(out), "--format", "housecat6d"]) == 2
    assert "folder is not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), "--format", "ycb"]) == 2
    assert "unknown format 'ycb'" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), "--scenes", "0"]) == 2
    assert "scenes must be a positive integer; got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth"])  # --out is required
    assert (
        main(
            [
                "--quiet",
                "synth",
                "--out",
                str(tmp_path / "prev"),
                "--preview",
                "--preview-frames",
                "1",
                "--image-size",
                "64x48",
            ]
        )
        == 0
    )
    assert encoding.read_color(tmp_path / "prev" / "preview.png").shape == (48, 256, 3)
    assert main(["synth", "--out", str(tmp_path / "y"), "--image-size", "64by48"]) == 2
    assert "--image-size must look like 640x480; got '64by48'" in capsys.readouterr().err


def test_cli_synth_with_models_backgrounds_and_skip_bad(tmp_path, capsys):
    import json

    import cv2

    from tests.data.synth.mesh_builders import write_textured_box

    models = tmp_path / "models"
    for index in range(2):
        write_textured_box(models / "camera", f"box{index}", [0, 0, 0], [0.06, 0.05, 0.04 + 0.01 * index])
    (models / "mug").mkdir()
    (models / "mug" / "broken.obj").write_text("f 1 2 3\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "room.png"), np.full((60, 80, 3), 128, np.uint8))
    arguments = [
        "--quiet",
        "synth",
        "--out",
        str(tmp_path / "d"),
        "--models",
        str(models),
        "--backgrounds",
        str(photos),
        "--scenes",
        "1",
        "--frames-per-scene",
        "1",
        "--image-size",
        "64x48",
        "--splits",
        "camera_train,camera_val",
        "--test-fraction",
        "0.5",
        "--procedural-fraction",
        "0.25",
    ]
    assert main(arguments) == 2
    assert "mug/broken.obj: mesh has no faces" in capsys.readouterr().err  # its face names missing vertices
    assert main(["synth", "--out", str(tmp_path / "e"), "--procedural-fraction", "0.5"]) == 2
    assert "apply to --models meshes; pass --models DIR" in capsys.readouterr().err
    assert main(arguments + ["--skip-bad"]) == 0
    assert "wrote 2 frames" in capsys.readouterr().out
    marker = json.loads((tmp_path / "d" / "cleanpose_synth.json").read_text())
    assert marker["imported_meshes"]["meshes"] == 2 and marker["backgrounds"]["photos"] == 1
    assert len(marker["imported_meshes"]["skipped"]) == 1 and "broken.obj" in marker["imported_meshes"]["skipped"][0]
    val = encoding.read_pickle(tmp_path / "d" / "obj_models" / "camera_val.pkl")
    train = encoding.read_pickle(tmp_path / "d" / "obj_models" / "camera_train.pkl")
    imported = {name for name in list(val) + list(train) if name.startswith("camera_box")}
    assert imported == {"camera_box0", "camera_box1"} and not (set(val) & set(train))  # one held out
    assert (
        main(
            [
                "--quiet",
                "synth",
                "--out",
                str(tmp_path / "p"),
                "--models",
                str(models),
                "--skip-bad",
                "--preview",
                "--preview-frames",
                "1",
                "--image-size",
                "64x48",
                "--test-fraction",
                "0",
            ]
        )
        == 0
    )
    assert encoding.read_color(tmp_path / "p" / "preview.png").shape == (48, 256, 3)
