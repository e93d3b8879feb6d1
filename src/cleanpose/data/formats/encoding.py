"""File-boundary codecs shared by the dataset readers and the synthetic generator.

Everything here converts between on-disk encodings (PNG, text, pickle) and arrays; this is the only
place where millimetres, 8-bit NOCS codes and OpenCV's BGR channel order appear. Rules (spec
`docs/data_formats.md`):

* Depth (§1.3): 16-bit single-channel PNG in millimetres (REAL, HouseCat6D, composed CAMERA depth),
  or the CAMERA 8-bit 3-channel encoding ``d = G·256 + R`` (B ignored) whose code 32001 means
  "no object" and decodes to 0. The channels are widened before combining (NumPy ≥ 2, docs/data_formats.md P1).
* Instance mask (§1.4): channel index 2 of a cv2 3-channel read (the single channel of a grey PNG).
* NOCS map (§1.5): 8-bit RGB codes ``round(255·c)`` of ``c = q + 0.5`` with the z code flipped
  (``B = round(255·(1 − c_z))``); reading divides by 255 and flips z back.
* Colour (§1.2): first three channels of a cv2 read, BGR → RGB.
* ``_meta.txt`` (§1.6): one instance per line, ``inst_id class_id synset_id model_id`` (CAMERA) or
  ``inst_id class_id model_name`` (REAL, HouseCat6D).

Every reader raises `DataFormatError` naming the file when it is missing, unreadable, truncated, or
of the wrong dtype or channel count. Every writer writes to a hidden temporary name in the target
folder and renames it into place, so an interrupted run never leaves a half-written file under a
name a reader would open.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any, NamedTuple

import cv2
import numpy as np

from cleanpose.errors import DataFormatError
from cleanpose.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

CAMERA_DEPTH_BACKGROUND = 32001
"""Code of "no object" pixels in CAMERA 3-channel ``_depth.png`` files (G = 125, R = 1)."""

MASK_BACKGROUND_NOCS = 255
"""Background value of NOCS ``_mask.png`` files."""

PICKLE_PROTOCOL = 4
"""Fixed pickle protocol so that the same content gives byte-identical files."""

# Fast settings: zlib level 1 with run-length matching compresses masks and depth well and keeps
# noisy colour images affordable (about 2× faster than the default level at similar size).
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# file helpers (writes go through `cleanpose.fileio.atomic_write_bytes`)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write UTF-8 `text` under a temporary name and rename it onto `path` (list files, meta files)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _read_bytes(path: PathLike, what: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: {what} file not found") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read {what} file ({error.strerror or error})") from None


def _read_png(path: PathLike, what: str) -> np.ndarray:
    """Decode an image file with OpenCV's unchanged flag (keeps bit depth and channel count)."""
    data = _read_bytes(path, what)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise DataFormatError(f"{path}: {what} image is empty, truncated or not a PNG/image file")
    return image


def _write_png(path: PathLike, image: np.ndarray) -> None:
    ok, buffer = cv2.imencode(".png", image, _PNG_PARAMS)
    if not ok:
        raise DataFormatError(f"{path}: OpenCV could not encode an image of shape {image.shape}, {image.dtype}")
    atomic_write_bytes(path, buffer.tobytes())


# --------------------------------------------------------------------------------------------
# depth


def decode_depth(array: np.ndarray, path: PathLike = "<array>") -> np.ndarray:
    """Apply the reference depth decoding rule to an array read with OpenCV's unchanged flag.

    Args:
        array: (H, W) uint16 millimetres, or (H, W, C ≥ 3) uint8 in OpenCV order (B, G, R) holding
            the CAMERA encoding ``d = G·256 + R``.
        path: file the array came from, used in error messages.

    Returns:
        (H, W) uint16 depth in millimetres; 0 marks missing depth (the CAMERA code 32001 included).

    Raises:
        DataFormatError: any other dtype, dimensionality or channel count.
    """
    if array.ndim == 3:
        if array.dtype != np.uint8 or array.shape[2] < 3:
            raise DataFormatError(
                f"{path}: 3-dim depth image has dtype {array.dtype} and {array.shape[2]} channels; "
                "expected uint8 with >= 3 channels (CAMERA G*256+R encoding)"
            )
        depth = array[:, :, 1].astype(np.uint16) * np.uint16(256) + array[:, :, 2].astype(np.uint16)
        depth[depth == CAMERA_DEPTH_BACKGROUND] = 0
        return depth
    if array.ndim == 2 and array.dtype == np.uint16:
        return array
    raise DataFormatError(
        f"{path}: depth image has shape {array.shape} and dtype {array.dtype}; "
        "expected (H, W) uint16 millimetres or (H, W, 3) uint8 CAMERA encoding"
    )


def read_depth(path: PathLike) -> np.ndarray:
    """Read a depth PNG (either encoding) as (H, W) uint16 millimetres, 0 = missing."""
    return decode_depth(_read_png(path, "depth"), path)


def encode_camera_depth(depth_mm: np.ndarray) -> np.ndarray:
    """Encode millimetre depth in the CAMERA 3-channel format.

    Args:
        depth_mm: (H, W) integer millimetres in [0, 65535]; 0 marks "no object".

    Returns:
        (H, W, 3) uint8 in OpenCV order: B = 0, G = d >> 8, R = d & 255; pixels with d = 0 get the
        code 32001 (G = 125, R = 1).
    """
    depth = np.asarray(depth_mm)
    if depth.ndim != 2:
        raise ValueError(f"depth_mm must be (H, W); got shape {depth.shape}")
    if depth.size and (depth.min() < 0 or depth.max() > 65535):
        raise ValueError(f"depth_mm must lie in [0, 65535] mm; got [{depth.min()}, {depth.max()}]")
    code = depth.astype(np.uint16)
    code = np.where(code == 0, np.uint16(CAMERA_DEPTH_BACKGROUND), code)
    image = np.zeros(depth.shape + (3,), dtype=np.uint8)
    image[:, :, 1] = (code >> 8).astype(np.uint8)
    image[:, :, 2] = (code & 255).astype(np.uint8)
    return image


def write_depth(path: PathLike, depth_mm: np.ndarray, three_channel: bool = False) -> None:
    """Write millimetre depth as a 16-bit PNG, or in the CAMERA 3-channel encoding.

    Args:
        path: target ``.png`` file.
        depth_mm: (H, W) integer millimetres in [0, 65535]; 0 marks missing depth.
        three_channel: True writes the CAMERA ``_depth.png`` encoding (`encode_camera_depth`).
    """
    depth = np.asarray(depth_mm)
    if three_channel:
        _write_png(path, encode_camera_depth(depth))
        return
    if depth.ndim != 2:
        raise ValueError(f"depth_mm must be (H, W); got shape {depth.shape}")
    if depth.size and (depth.min() < 0 or depth.max() > 65535):
        raise ValueError(f"depth_mm must lie in [0, 65535] mm; got [{depth.min()}, {depth.max()}]")
    _write_png(path, depth.astype(np.uint16))


# --------------------------------------------------------------------------------------------
# instance mask


def read_mask(path: PathLike) -> np.ndarray:
    """Read an instance-id PNG as (H, W) uint8: channel index 2 of a 3-channel read (§1.4)."""
    image = _read_png(path, "mask")
    if image.dtype != np.uint8:
        raise DataFormatError(f"{path}: mask image has dtype {image.dtype}; expected 8-bit instance ids")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] >= 3:
        return np.ascontiguousarray(image[:, :, 2])
    raise DataFormatError(f"{path}: mask image has shape {image.shape}; expected (H, W) or (H, W, 3)")


def write_mask(path: PathLike, mask: np.ndarray) -> None:
    """Write (H, W) uint8 instance ids as a single-channel 8-bit PNG."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be (H, W) uint8; got shape {mask.shape}, dtype {mask.dtype}")
    _write_png(path, mask)


# --------------------------------------------------------------------------------------------
# NOCS coordinate map


def read_coord(path: PathLike) -> np.ndarray:
    """Read a NOCS map as (H, W, 3) float32 in [0, 1], channels (x, y, z), z flipped back (§1.5).

    The centred normalized object coordinate is ``q = c − 0.5``.
    """
    image = _read_png(path, "NOCS coord")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] < 3:
        raise DataFormatError(
            f"{path}: NOCS coord image has shape {image.shape}, dtype {image.dtype}; expected (H, W, 3) uint8"
        )
    coord = image[:, :, 2::-1].astype(np.float32) / np.float32(255.0)
    coord[:, :, 2] = np.float32(1.0) - coord[:, :, 2]
    return coord


def encode_coord(q_centred: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Encode centred normalized object coordinates as the 8-bit NOCS image.

    Args:
        q_centred: (H, W, 3) float, normalized object frame (tight box diagonal 1, centred), so
            each component lies in [−0.5, 0.5]; values outside are clipped.
        mask: optional (H, W) bool, True where `q_centred` is defined; other pixels are written 0.

    Returns:
        (H, W, 3) uint8 in OpenCV order (B, G, R) with R = round(255·(q_x + 0.5)),
        G = round(255·(q_y + 0.5)), B = round(255·(1 − (q_z + 0.5))).
    """
    q = np.asarray(q_centred, dtype=np.float64)
    if q.ndim != 3 or q.shape[2] != 3:
        raise ValueError(f"q_centred must be (H, W, 3); got shape {q.shape}")
    selected = np.ones(q.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    values = q[selected]  # only the masked pixels are encoded: objects cover a small part of a frame
    code = np.stack([1.0 - (values[:, 2] + 0.5), values[:, 1] + 0.5, values[:, 0] + 0.5], axis=1)
    image = np.zeros(q.shape, dtype=np.uint8)
    image[selected] = np.rint(np.clip(np.nan_to_num(code), 0.0, 1.0) * 255.0).astype(np.uint8)
    return image


def write_coord(path: PathLike, q_centred: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Write centred normalized object coordinates as a NOCS ``_coord.png`` (see `encode_coord`)."""
    _write_png(path, encode_coord(q_centred, mask))


# --------------------------------------------------------------------------------------------
# colour


def read_color(path: PathLike) -> np.ndarray:
    """Read a colour PNG as (H, W, 3) uint8 RGB (first three channels, BGR → RGB)."""
    image = _read_png(path, "colour")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataFormatError(
            f"{path}: colour image has shape {image.shape}, dtype {image.dtype}; expected (H, W, 3|4) uint8"
        )
    # cvtColor swaps the channels exactly as ``image[:, :, 2::-1]`` (alpha dropped), 30× faster than NumPy's copy.
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)


def write_color(path: PathLike, rgb: np.ndarray) -> None:
    """Write (H, W, 3) uint8 RGB as an 8-bit 3-channel PNG (stored BGR, as OpenCV does)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8; got shape {rgb.shape}, dtype {rgb.dtype}")
    _write_png(path, np.ascontiguousarray(rgb[:, :, ::-1]))


# --------------------------------------------------------------------------------------------
# meta file


class MetaRow(NamedTuple):
    """One ``_meta.txt`` / ``meta.txt`` line."""

    instance_id: int
    """Value of the instance in the mask image (1-based)."""
    class_id: int
    """1-based category id; 0 = background/distractor."""
    model: str
    """CAMERA model hash, REAL model name or HouseCat6D ``<class>-<name>``."""
    synset: str | None = None
    """CAMERA ShapeNet synset id (4-field lines); None for 3-field lines."""


def read_meta(path: PathLike) -> list[MetaRow]:
    """Read a meta file: ``inst_id class_id synset model`` (CAMERA) or ``inst_id class_id model``.

    Blank lines are skipped; rows keep the file order (preprocessing emits instances in that order).
    """
    data = _read_bytes(path, "meta")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: meta file is not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (3, 4):
            raise DataFormatError(
                f"{path}:{number}: meta line has {len(fields)} fields; expected "
                "'inst_id class_id model' or 'inst_id class_id synset model'"
            )
        try:
            instance_id, class_id = int(fields[0]), int(fields[1])
        except ValueError:
            raise DataFormatError(f"{path}:{number}: inst_id and class_id must be integers; got {line!r}") from None
        if len(fields) == 4:
            rows.append(MetaRow(instance_id, class_id, fields[3], fields[2]))
        else:
            rows.append(MetaRow(instance_id, class_id, fields[2]))
    return rows


def write_meta(path: PathLike, rows: list[MetaRow]) -> None:
    """Write meta rows, one per line (4 fields when `synset` is set, else 3)."""
    lines = []
    for row in rows:
        row = MetaRow(*row)
        if any(char.isspace() for char in row.model) or (row.synset and any(c.isspace() for c in row.synset)):
            raise ValueError(f"meta names must not contain whitespace; got {row}")
        middle = f" {row.synset}" if row.synset is not None else ""
        lines.append(f"{int(row.instance_id)} {int(row.class_id)}{middle} {row.model}\n")
    write_text_atomic(path, "".join(lines))


# --------------------------------------------------------------------------------------------
# pickles


def read_pickle(path: PathLike) -> Any:
    """Load a pickle (label, model or result file); Python-2 pickles are decoded as latin-1.

    Only open files you trust: unpickling can run code.
    """
    data = _read_bytes(path, "pickle")
    try:
        try:
            return pickle.loads(data)
        except UnicodeDecodeError:
            return pickle.loads(data, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as error:
        raise DataFormatError(f"{path}: not a readable pickle (truncated or corrupt): {error}") from None


def write_pickle_atomic(path: PathLike, obj: Any) -> None:
    """Pickle `obj` (fixed protocol, so equal content gives equal bytes) and rename into place."""
    atomic_write_bytes(path, pickle.dumps(obj, protocol=PICKLE_PROTOCOL))
