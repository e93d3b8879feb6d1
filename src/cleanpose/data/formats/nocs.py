"""Reader for the NOCS dataset (CAMERA and REAL) in the layout left by DPDN preprocessing.

See `docs/data_formats.md` §1–§2. Layout under the dataset root::

    camera/{train,val}/<FFFFF>/<IIII>_{color,mask,coord,depth}.png, _meta.txt, _label.pkl
    camera/train_list.txt, real/train_list.txt    (frames that passed annotation)
    real/{train,test}/scene_<k>/<IIII>_...
    camera_full_depths/{train,val}/<FFFFF>/<IIII>_composed.png
    obj_models/camera_train.pkl, obj_models/real_train.pkl

A frame is named by its *relative prefix* under the root, e.g. ``camera/train/00012/0003``; file
paths are that prefix plus a suffix. Paths are built structurally (docs/data_formats.md P12): the composed depth
of ``camera/<split>/<F>/<I>`` is ``camera_full_depths/<split>/<F>/<I>_composed.png`` whatever the root
is called. Depth stays in millimetres here; intrinsics are fixed per source (§1.8).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cleanpose.data.formats.encoding import read_pickle
from cleanpose.errors import DataFormatError

logger = logging.getLogger(__name__)

CATEGORY_NAMES = ("bottle", "bowl", "camera", "can", "laptop", "mug")
"""NOCS categories by 0-based category id (file class ids are these + 1)."""

SYMMETRIC_CATEGORY_IDS = frozenset({0, 1, 3})
"""0-based ids whose rotation label is canonicalized about y in training (bottle, bowl, can)."""

IMAGE_HEIGHT = 480
IMAGE_WIDTH = 640

CAMERA_INTRINSICS = np.array([[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]])
"""CAMERA (synthetic) intrinsics, pixels (§1.8)."""

REAL_INTRINSICS = np.array([[591.0125, 0.0, 322.525], [0.0, 590.16775, 244.11084], [0.0, 0.0, 1.0]])
"""REAL intrinsics, pixels (§1.8)."""

SOURCES = ("camera", "real")
"""Top-level folders of the two NOCS sources."""

TRAIN_LISTS = {"camera": "camera/train_list.txt", "real": "real/train_list.txt"}
MODEL_FILES = {"camera": "obj_models/camera_train.pkl", "real": "obj_models/real_train.pkl"}
MUG_META_FILE = "obj_models/mug_meta.pkl"

MUG_CLASS_ID = 6

LABEL_KEYS = ("class_ids", "instance_ids", "model_list", "bboxes", "scales", "sizes", "rotations", "translations")
"""Keys of a DPDN ``_label.pkl`` that the training reader needs (§2.4)."""


def intrinsics_for(source: str) -> np.ndarray:
    """(3, 3) float64 intrinsics of ``"camera"`` or ``"real"``.

    Raises:
        ValueError: unknown source.
    """
    if source == "camera":
        return CAMERA_INTRINSICS.copy()
    if source == "real":
        return REAL_INTRINSICS.copy()
    raise ValueError(f"unknown NOCS source {source!r}; expected one of {SOURCES}")


@dataclass(frozen=True)
class NocsLabel:
    """Annotations of one training frame (``_label.pkl``, §2.4); N ≥ 1 instances, file order."""

    class_ids: np.ndarray
    """(N,) int64, 1-based category ids (1…6)."""
    instance_ids: np.ndarray
    """(N,) int64, value of each instance in ``_mask.png``."""
    model_names: tuple[str, ...]
    """N keys into the ``obj_models`` point-cloud pickle."""
    bboxes: np.ndarray
    """(N, 4) int64 ``[y1, x1, y2, x2]``, pixels, y2/x2 exclusive."""
    scales: np.ndarray
    """(N,) float32 metres per normalized-object unit."""
    sizes: np.ndarray
    """(N, 3) float32 normalized box extents; the metric size is ``scales[i] · sizes[i]``."""
    rotations: np.ndarray
    """(N, 3, 3) float32, normalized object → camera."""
    translations: np.ndarray
    """(N, 3) float32 metres, camera frame."""

    def __len__(self) -> int:
        return len(self.class_ids)


def _field(path, data: dict, key: str, shape_tail: tuple[int, ...], count: int | None, dtype) -> np.ndarray:
    try:
        array = np.asarray(data[key])
    except KeyError:
        raise DataFormatError(f"{path}: label has no key {key!r}; present keys: {sorted(data)}") from None
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: label key {key!r} is not an array") from None
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        raise DataFormatError(f"{path}: label key {key!r} has shape {array.shape}; expected (N, {shape_tail})")
    if count is not None and array.shape[0] != count:
        raise DataFormatError(f"{path}: label key {key!r} has {array.shape[0]} entries but 'instance_ids' has {count}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataFormatError(f"{path}: label key {key!r} has dtype {array.dtype}; expected numbers")
    if not np.all(np.isfinite(array)):
        raise DataFormatError(f"{path}: label key {key!r} contains NaN or inf")
    return array.astype(dtype, copy=False)


def parse_label(data, path="<label>") -> NocsLabel:
    """Validate a loaded ``_label.pkl`` dict and convert it to `NocsLabel`.

    Raises:
        DataFormatError: not a dict, a key missing, a shape or count mismatch, non-finite values,
            class ids outside 1…6, or no instance at all.
    """
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: label pickle holds {type(data).__name__}; expected a dict")
    instance_ids = _field(path, data, "instance_ids", (), None, np.int64)
    count = len(instance_ids)
    if count == 0:
        raise DataFormatError(f"{path}: label has no instances")
    class_ids = _field(path, data, "class_ids", (), count, np.int64)
    if class_ids.min() < 1 or class_ids.max() > len(CATEGORY_NAMES):
        raise DataFormatError(f"{path}: label class_ids {class_ids.tolist()} outside 1..{len(CATEGORY_NAMES)}")
    if "model_list" not in data:
        raise DataFormatError(f"{path}: label has no key 'model_list'; present keys: {sorted(data)}")
    model_names = tuple(str(name) for name in data["model_list"])
    if len(model_names) != count:
        raise DataFormatError(
            f"{path}: label key 'model_list' has {len(model_names)} entries but 'instance_ids' has {count}"
        )
    return NocsLabel(
        class_ids=class_ids,
        instance_ids=instance_ids,
        model_names=model_names,
        bboxes=_field(path, data, "bboxes", (4,), count, np.int64),
        scales=_field(path, data, "scales", (), count, np.float32),
        sizes=_field(path, data, "sizes", (3,), count, np.float32),
        rotations=_field(path, data, "rotations", (3, 3), count, np.float32),
        translations=_field(path, data, "translations", (3,), count, np.float32),
    )


def read_label(path: str | os.PathLike) -> NocsLabel:
    """Read and validate a DPDN ``_label.pkl`` (see `parse_label`)."""
    return parse_label(read_pickle(path), path)


def read_list(path: str | os.PathLike) -> list[str]:
    """Entries of a list file (one relative frame prefix per line, blank lines ignored).

    Raises:
        DataFormatError: the file is missing or unreadable.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            return [line.strip() for line in stream if line.strip()]
    except FileNotFoundError:
        raise DataFormatError(f"{path}: list file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: cannot read list file ({error})") from None


def train_frames(root: str | os.PathLike, source: str) -> list[str]:
    """Relative prefixes of the training frames of a source, in list order.

    ``camera/train_list.txt`` entry ``train/00012/0003`` becomes ``camera/train/00012/0003``.

    Raises:
        ValueError: unknown source.
        DataFormatError: the list file is missing or empty.
    """
    if source not in TRAIN_LISTS:
        raise ValueError(f"unknown NOCS source {source!r}; expected one of {SOURCES}")
    list_path = Path(root) / TRAIN_LISTS[source]
    entries = read_list(list_path)
    if not entries:
        raise DataFormatError(f"{list_path}: list file is empty")
    return [f"{source}/{entry}" for entry in entries]


def frame_path(root: str | os.PathLike, prefix: str, suffix: str) -> Path:
    """``root/prefix + suffix``, e.g. suffix ``_color.png``."""
    return Path(root) / f"{prefix}{suffix}"


def depth_path(root: str | os.PathLike, prefix: str) -> Path:
    """Depth file the reference reads for a frame: the composed depth for CAMERA, else ``_depth.png``.

    ``camera/<split>/<F>/<I>`` → ``camera_full_depths/<split>/<F>/<I>_composed.png`` (only the first
    path component is replaced, docs/data_formats.md P12); ``real/...`` → ``real/..._depth.png``.
    """
    parts = PurePosixPath(prefix).parts
    if parts and parts[0] == "camera":
        return Path(root, "camera_full_depths", *parts[1:-1], f"{parts[-1]}_composed.png")
    return frame_path(root, prefix, "_depth.png")


def source_of(prefix: str) -> str:
    """``"camera"`` or ``"real"`` from the first component of a relative prefix.

    Raises:
        DataFormatError: the prefix starts with neither.
    """
    first = PurePosixPath(prefix).parts[0] if prefix else ""
    if first not in SOURCES:
        raise DataFormatError(f"frame {prefix!r}: path must start with 'camera/' or 'real/'")
    return first


def read_models(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Object point clouds ``obj_models/*.pkl``: name → (M, 3) float32 normalized points (§2.7).

    Raises:
        DataFormatError: unreadable, not a dict, or an entry that is not an (M, 3) array.
    """
    data = read_pickle(path)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: model pickle holds {type(data).__name__}; expected dict name -> (M, 3) array")
    models = {}
    for name, points in data.items():
        array = np.asarray(points)
        if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
            raise DataFormatError(f"{path}: model {name!r} has shape {array.shape}; expected (M, 3)")
        models[str(name)] = array.astype(np.float32)
    return models


def read_mug_meta(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, float]]:
    """SPD's ``mug_meta.pkl``: model name → (shift (3,) float64 normalized units, scale float) (§2.7).

    Raises:
        DataFormatError: unreadable, not a dict, or an entry that is not ``[shift (3,), scale]``.
    """
    data = read_pickle(path)
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{path}: mug meta pickle holds {type(data).__name__}; expected dict name -> [shift, scale]"
        )
    meta = {}
    for name, entry in data.items():
        try:
            shift, scale = entry
            shift = np.asarray(shift, dtype=np.float64).reshape(3)
            scale = float(scale)
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}: mug {name!r} entry is not [shift (3,), scale]") from None
        meta[str(name)] = (shift, scale)
    return meta


def relabel_mug(
    rotation: np.ndarray, translation: np.ndarray, scale: float, shift: np.ndarray, mug_scale: float
) -> tuple[np.ndarray, np.float32]:
    """SPD's mug relabel ``t ← t − s·R·shift``, ``s ← s / mug_scale`` (docs/data_formats.md P6, opt-in).

    Brings a mug label into the frame of its SPD-shifted point model (DPDN labels skip this step).

    Args:
        rotation: (3, 3) normalized object → camera.
        translation: (3,) metres.
        scale: metres per normalized unit (label ``scales[i]``).
        shift, mug_scale: the model's `read_mug_meta` entry.

    Returns:
        (translation (3,) float32 metres, scale float32).
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    new_translation = np.asarray(translation, dtype=np.float64) - float(scale) * rotation @ shift
    return new_translation.astype(np.float32), np.float32(float(scale) / mug_scale)
