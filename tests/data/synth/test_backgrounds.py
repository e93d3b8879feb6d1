"""Photos behind the scene: colour from the photo exactly where the depth is the photo plane."""

import logging

import cv2
import numpy as np
import pytest

from cleanpose.data.synth import SensorNoise
from cleanpose.data.synth.backgrounds import draw_backdrop, scan_backgrounds
from cleanpose.data.synth.generate import scene_frames
from cleanpose.data.synth.scene import SPLIT_CODES, instance_shape
from cleanpose.errors import ConfigError, DataFormatError

SIZE = (160, 120)
PHOTO_RGB = (20, 200, 90)


def test_scan_errors_and_skips(tmp_path, caplog):
    with pytest.raises(ConfigError, match="--backgrounds folder does not exist"):
        scan_backgrounds(tmp_path / "none")
    with pytest.raises(ConfigError, match="no usable photo"):
        scan_backgrounds(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.jpg").write_text("not a photo")
    with pytest.raises(DataFormatError, match=r"b.jpg: cannot be read as an image"):
        scan_backgrounds(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cleanpose.data.synth.backgrounds"):
        found = scan_backgrounds(tmp_path, skip_bad=True)
    assert [p.split("/")[-1] for p in found.paths] == ["a.png"] and len(found.skipped) == 1
    assert "skipped 1 unreadable photo(s)" in caplog.text


def test_backdrop_of_a_frame_sized_photo_is_the_photo_or_its_mirror(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "p.png"), photo[:, :, ::-1])
    backgrounds = scan_backgrounds(tmp_path)
    seen = set()
    for key in range(8):
        backdrop = draw_backdrop(backgrounds, SIZE, np.random.default_rng(key))
        mirrored = np.array_equal(backdrop.image, photo[:, ::-1])
        assert np.array_equal(backdrop.image, photo) or mirrored
        seen.add(mirrored)
    assert seen == {True, False}


def test_photo_plane_depth_and_colour_are_consistent(tmp_path):
    cv2.imwrite(str(tmp_path / "wall.jpg"), np.full((300, 500, 3), PHOTO_RGB[::-1], np.uint8))
    backgrounds = scan_backgrounds(tmp_path)
    seed, split = 5, "real_train"  # a scene whose frames show the photo over more than 10 % of the pixels
    for scene, _, frame, arrays in scene_frames(
        "nocs", split, 0, 2, seed, SIZE, SensorNoise(enabled=False), 1, backgrounds=backgrounds
    ):
        camera = scene.cameras[frame]
        farthest = 0.0  # the farthest object vertex in the camera frame, by hand
        for placed in scene.objects:
            vertices = instance_shape(placed.instance).mesh.vertices
            world = placed.scale * vertices @ placed.rotation.T + placed.translation
            farthest = max(farthest, float((world @ camera.rotation.T + camera.translation)[:, 2].max()))
        margin = draw_backdrop(backgrounds, SIZE, np.random.default_rng([seed, SPLIT_CODES[split], 0, 4, frame])).margin
        plane = farthest + margin
        on_plane = np.abs(arrays.depth - plane) < 1e-9
        assert on_plane.sum() > 0.1 * on_plane.size and (arrays.depth <= plane + 1e-9).all()
        assert (arrays.object_index[on_plane] == -1).all()
        # JPEG of a flat colour decodes exactly; the sensor colour noise is below 5 levels
        assert np.abs(arrays.color[on_plane].astype(int) - PHOTO_RGB).max() <= 5
        assert (arrays.depth[arrays.object_index >= 0] < plane).all()
