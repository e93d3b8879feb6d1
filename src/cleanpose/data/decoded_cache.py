"""Decoded colour and mask images per file, cached on disk as uncompressed ``.npy`` read memory-mapped.

A training sample uses one object's crop window of a 640 × 480 frame, but decoding the frame's PNGs
(colour and mask) is about half of a loader worker's time. With a cache folder, each image is decoded once
and stored as the exact array the PNG reader returns; later reads map the file (``np.load(mmap_mode="r")``),
so slicing the crop window touches only its rows and nothing is decoded (see `benchmarks/NOTES.md`, issue 17).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cleanpose.data.depth_cache import source_key
from cleanpose.data.formats.encoding import read_color, read_mask
from cleanpose.fileio import atomic_writer

logger = logging.getLogger(__name__)

_KINDS: dict[str, tuple[Callable[[Path], np.ndarray], int]] = {"colour": (read_color, 3), "mask": (read_mask, 2)}
"""Reader and array dimensionality of each cached image kind."""


class DecodedFrameCache:
    """`read_color` / `read_mask` output per file, optionally cached on disk.

    An entry is keyed like `cleanpose.data.depth_cache.FilledDepthCache` (resolved path, modification time
    in ns and size of the source file: an edited file is decoded again) and written atomically as
    ``<kind>_<key>.npy``: uint8, (H, W, 3) RGB colour (0.9 MB at 640 × 480) or (H, W) mask (0.3 MB). A
    cached read returns a read-only memory map of the entry, equal element for element to the decoded
    image. An entry that is not a complete ``.npy`` of the expected dtype, dimensionality and file size
    (truncated, foreign or damaged header) is logged, decoded again and rewritten; damaged pixel bytes
    inside a complete entry are not detected (the entries are written atomically, never in place).

    Args:
        cache_dir: folder for the entries (created); None decodes every time (no cache).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def color(self, path: str | os.PathLike) -> np.ndarray:
        """(H, W, 3) uint8 RGB of a colour image (as `read_color`).

        Raises:
            DataFormatError: the file is missing, unreadable or not a colour image.
        """
        return self._image(Path(path), "colour")

    def mask(self, path: str | os.PathLike) -> np.ndarray:
        """(H, W) uint8 instance ids of a mask image (as `read_mask`).

        Raises:
            DataFormatError: the file is missing, unreadable or not a mask image.
        """
        return self._image(Path(path), "mask")

    def _image(self, path: Path, kind: str) -> np.ndarray:
        read, ndim = _KINDS[kind]
        if self.cache_dir is None:
            return read(path)
        entry = self.cache_dir / f"{kind}_{source_key(path, kind)}.npy"
        if entry.exists():
            image = _load_entry(entry, ndim)
            if image is not None:
                return image
        image = read(path)
        with atomic_writer(entry) as handle:
            np.save(handle, image)
        return image


def _load_entry(entry: Path, ndim: int) -> np.ndarray | None:
    """The memory-mapped entry, or None (logged) when it is not a complete uint8 array of `ndim` dims."""
    try:
        image = np.load(entry, mmap_mode="r")
        complete = image.offset + image.nbytes == entry.stat().st_size
    except (OSError, ValueError) as error:
        logger.warning("%s: unreadable decoded-image cache entry, decoding again (%s)", entry, error)
        return None
    if image.dtype != np.uint8 or image.ndim != ndim or image.shape[2:] not in ((), (3,)) or not complete:
        logger.warning(
            "%s: decoded-image cache entry has shape %s, dtype %s and %d bytes; decoding again",
            entry,
            image.shape,
            image.dtype,
            entry.stat().st_size,
        )
        return None
    return image
