"""Real photos composited behind synthetic scenes (``cleanpose synth --backgrounds DIR``).

As NOCS's CAMERA set pastes its renderings onto real images, a frame may show a photo behind its
objects. The photo (scaled to cover the frame, randomly cropped and mirrored) is placed on the
camera-facing plane ``z = d`` behind every object of the scene, ``d`` = the farthest object vertex plus a
random margin; that plane replaces the room and hides the part of the table beyond it, and the depth
map holds ``d`` there. Colour and depth therefore describe one consistent 3-D scene: objects on a
table in front of a large photo. The photo is not shaded (it carries its own lighting); the sensor
colour and depth noise apply to it as to everything else.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from cleanpose.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png")
MARGIN_RANGE = (0.05, 0.5)
"""Distance of the photo plane behind the farthest object vertex, metres (uniform)."""


class Backdrop(NamedTuple):
    """The photo of one frame."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB, the frame's size."""
    margin: float
    """Metres between the farthest object vertex and the photo plane."""


@dataclasses.dataclass(frozen=True)
class BackgroundSet:
    """The usable photos of a ``--backgrounds`` folder."""

    paths: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    """``"<file>: <reason>"`` of photos left out (``skip_bad``)."""


@functools.lru_cache(maxsize=8)
def read_photo(path: str) -> np.ndarray:
    """(h, w, 3) uint8 RGB of a JPG/PNG (cached per process); `DataFormatError` naming the file if unreadable."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise DataFormatError(f"{path}: cannot be read as an image (expected {', '.join(PHOTO_EXTENSIONS)})")
    return np.ascontiguousarray(image[:, :, ::-1])


def scan_backgrounds(folder, skip_bad: bool = False) -> BackgroundSet:
    """Every JPG/PNG of a folder (sorted), each checked by reading it.

    Raises:
        ConfigError: the folder does not exist or has no usable photo.
        DataFormatError: an unreadable photo (without `skip_bad`; with it the photo is logged and counted).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root}: --backgrounds folder does not exist")
    paths, skipped = [], []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS and p.is_file()):
        try:
            read_photo(str(path))
        except DataFormatError as error:
            if not skip_bad:
                raise
            skipped.append(str(error))
            logger.warning("skipped bad photo: %s", error)
            continue
        paths.append(str(path))
    if skipped:
        logger.warning("%s: skipped %d unreadable photo(s)", root, len(skipped))
    if not paths:
        raise ConfigError(f"{root}: no usable photo ({', '.join(PHOTO_EXTENSIONS)}) in the --backgrounds folder")
    return BackgroundSet(tuple(paths), tuple(skipped))


def draw_backdrop(backgrounds: BackgroundSet, image_size: tuple[int, int], generator: np.random.Generator) -> Backdrop:
    """Pick a photo, scale it to cover the frame (aspect kept), crop at random, maybe mirror it.

    Args:
        backgrounds: the photos.
        image_size: (W, H) pixels.
        generator: source of the photo choice, crop, mirror and plane margin.
    """
    width, height = image_size
    photo = read_photo(backgrounds.paths[int(generator.integers(len(backgrounds.paths)))])
    factor = max(width / photo.shape[1], height / photo.shape[0])
    scaled_size = (
        max(width, int(np.ceil(photo.shape[1] * factor))),
        max(height, int(np.ceil(photo.shape[0] * factor))),
    )
    scaled = cv2.resize(photo, scaled_size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    left = int(generator.integers(scaled.shape[1] - width + 1))
    top = int(generator.integers(scaled.shape[0] - height + 1))
    image = scaled[top : top + height, left : left + width]
    if generator.random() < 0.5:
        image = image[:, ::-1]
    return Backdrop(np.ascontiguousarray(image), float(generator.uniform(*MARGIN_RANGE)))
