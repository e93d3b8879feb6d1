"""A PNG contact sheet of a few synthetic frames: colour | depth | instance mask | NOCS map per row."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from cleanpose.data.formats import encoding
from cleanpose.data.synth import writer_housecat6d, writer_nocs
from cleanpose.data.synth.backgrounds import BackgroundSet
from cleanpose.data.synth.generate import DEFAULT_INSTANCES, FORMATS, scene_frames
from cleanpose.data.synth.scene import FrameArrays
from cleanpose.data.synth.sensor import SensorNoise
from cleanpose.data.synth.user_library import MeshSettings
from cleanpose.errors import ConfigError

logger = logging.getLogger(__name__)


def preview_row(arrays: FrameArrays) -> np.ndarray:
    """(H, 4W, 3) uint8 RGB: colour, sensor depth, objects, NOCS colours.

    Depth is drawn with the turbo colour map from blue (near) to red (far), black = missing; the map
    spans the 1st–95th percentile of the frame's valid depths, so that the relief of the objects on
    the table stays visible next to the far room.
    """
    depth = arrays.sensor_depth
    valid = depth > 0
    near, far = np.percentile(depth[valid], [1.0, 95.0]) if valid.any() else (0.0, 1.0)
    depth_code = np.clip((depth - near) / max(far - near, 1e-3) * 255.0, 0, 255).astype(np.uint8)
    depth_image = cv2.applyColorMap(depth_code, cv2.COLORMAP_TURBO)[:, :, ::-1].copy()
    depth_image[depth <= 0] = 0
    objects = arrays.object_index.astype(np.int32)
    palette = (
        np.array(
            [
                [0.12, 0.47, 0.71],
                [1.0, 0.5, 0.05],
                [0.17, 0.63, 0.17],
                [0.84, 0.15, 0.16],
                [0.58, 0.4, 0.74],
                [0.55, 0.34, 0.29],
                [0.89, 0.47, 0.76],
                [0.5, 0.5, 0.5],
            ]
        )
        * 255
    )
    mask_image = np.zeros(objects.shape + (3,), np.uint8)
    seen = objects >= 0
    mask_image[seen] = palette[objects[seen] % len(palette)].astype(np.uint8)
    nocs_image = np.zeros_like(mask_image)
    nocs_image[seen] = np.clip(np.rint((arrays.nocs[seen] + 0.5) * 255), 0, 255).astype(np.uint8)
    return np.concatenate([arrays.color, depth_image, mask_image, nocs_image], axis=1)


def write_preview(
    path,
    format: str = "nocs",
    frames: int = 4,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    noise: SensorNoise | None = None,
    meshes: MeshSettings | None = None,
    backgrounds: BackgroundSet | None = None,
) -> Path:
    """Render `frames` frames (scene i, first view, of the first split) and save the grid as a PNG.

    Args:
        path: output ``.png`` file (its folder is created).
        format: "nocs" or "housecat6d".
        frames: rows of the grid.
        seed: dataset seed (the rows are the frames `generate` would write with this seed).
        image_size: (W, H); default 640×480 (NOCS) or 548×426 (HouseCat6D at half size).
        noise: sensor model; default `SensorNoise()`.
        meshes: the user's meshes (``--models``); see `generate`.
        backgrounds: photos behind the scenes (``--backgrounds``); see `generate`.

    Returns:
        The written path.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}")
    if frames < 1:
        raise ConfigError(f"preview frames must be >= 1; got {frames}")
    split = writer_nocs.NOCS_SPLITS[0] if format == "nocs" else writer_housecat6d.HOUSECAT6D_SPLITS[0]
    if image_size is None:
        image_size = writer_nocs.NOCS_IMAGE_SIZE if format == "nocs" else (548, 426)
    noise = SensorNoise() if noise is None else noise
    rows = []
    for scene_index in range(frames):
        for _, _, _, arrays in scene_frames(
            format,
            split,
            scene_index,
            1,
            seed,
            tuple(image_size),
            noise,
            DEFAULT_INSTANCES[split],
            meshes=meshes,
            backgrounds=backgrounds,
        ):
            rows.append(preview_row(arrays))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding.write_color(path, np.concatenate(rows, axis=0))
    logger.info("wrote preview of %d frames to %s", frames, path)
    return path
