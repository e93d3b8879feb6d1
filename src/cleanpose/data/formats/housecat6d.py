"""Reader for HouseCat6D scene folders (`docs/data_formats.md` §5).

Layout under the dataset root::

    scene01 … scene34/            training scenes
    test_scene1 … test_scene5/    test scenes
      rgb/<NNNNNN>.png            colour, 1096 × 852
      depth/<NNNNNN>.png          depth, millimetres
      instance/<NNNNNN>.png       instance ids (channel 2)
      labels/<NNNNNN>_label.pkl   annotations (§5.3)
      intrinsics.txt              3 × 3 K
      meta.txt                    one line per object

Per-frame paths are built from the scene folder and the frame name (docs/data_formats.md P12: the reference
replaces every ``rgb`` in the path string, which breaks roots containing ``rgb``). Test scenes are
listed in sorted order (the reference globs them unsorted; docs/data_formats.md P4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cleanpose.data.formats.encoding import read_pickle
from cleanpose.errors import DataFormatError

CATEGORY_NAMES = ("box", "bottle", "can", "cup", "remote", "teapot", "cutlery", "glass", "shoe", "tube")
"""HouseCat6D categories by 0-based category id (file class ids are these + 1)."""

SYMMETRIC_CATEGORY_IDS = frozenset({1, 2, 7})
"""0-based ids canonicalized about y in training (bottle, can, glass)."""

IMAGE_HEIGHT = 852
IMAGE_WIDTH = 1096

SPLIT_PATTERNS = {"train": "scene*", "test": "test_scene*"}

LABEL_KEYS = ("instance_ids", "class_ids", "bboxes", "rotations", "translations", "gt_scales")


def list_scenes(root: str | os.PathLike, split: str) -> list[Path]:
    """Sorted scene folders of ``"train"`` (``scene*``) or ``"test"`` (``test_scene*``) that have ``rgb/``.

    Raises:
        ValueError: unknown split.
        DataFormatError: no scene folder found.
    """
    if split not in SPLIT_PATTERNS:
        raise ValueError(f"unknown HouseCat6D split {split!r}; expected 'train' or 'test'")
    scenes = sorted(path for path in Path(root).glob(SPLIT_PATTERNS[split]) if (path / "rgb").is_dir())
    if not scenes:
        raise DataFormatError(f"{root}: no HouseCat6D {split} scenes ({SPLIT_PATTERNS[split]}/rgb)")
    return scenes


@dataclass(frozen=True)
class HouseCatFrame:
    """One frame, named by its scene folder and 6-digit frame id."""

    scene: Path
    name: str
    """Frame id without extension, e.g. ``000123``."""

    @property
    def color_path(self) -> Path:
        return self.scene / "rgb" / f"{self.name}.png"

    @property
    def depth_path(self) -> Path:
        return self.scene / "depth" / f"{self.name}.png"

    @property
    def instance_path(self) -> Path:
        return self.scene / "instance" / f"{self.name}.png"

    @property
    def label_path(self) -> Path:
        return self.scene / "labels" / f"{self.name}_label.pkl"

    @property
    def intrinsics_path(self) -> Path:
        return self.scene / "intrinsics.txt"


def list_frames(scene: str | os.PathLike) -> list[HouseCatFrame]:
    """Frames of a scene: every ``rgb/*.png``, sorted by name."""
    scene = Path(scene)
    return [HouseCatFrame(scene, path.stem) for path in sorted((scene / "rgb").glob("*.png"))]


def read_intrinsics(path: str | os.PathLike) -> np.ndarray:
    """``intrinsics.txt`` as a (3, 3) float64 K (nine whitespace-separated numbers).

    Raises:
        DataFormatError: missing, unparsable, not nine numbers, or non-positive focal lengths.
    """
    try:
        values = np.loadtxt(path, dtype=np.float64)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: intrinsics file not found") from None
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{path}: cannot parse intrinsics ({error})") from None
    if values.size != 9:
        raise DataFormatError(f"{path}: intrinsics file has {values.size} numbers; expected 9 (a 3x3 matrix)")
    matrix = values.reshape(3, 3)
    if not (np.all(np.isfinite(matrix)) and matrix[0, 0] > 0 and matrix[1, 1] > 0):
        raise DataFormatError(f"{path}: intrinsics must be finite with positive fx, fy; got {matrix.tolist()}")
    return matrix


@dataclass(frozen=True)
class HouseCatLabel:
    """Annotations of one HouseCat6D frame (``labels/<N>_label.pkl``, §5.3); N instances."""

    instance_ids: np.ndarray
    """(N,) int64 values in the instance map."""
    class_ids: np.ndarray
    """(N,) int64, 1…10."""
    bboxes: np.ndarray
    """(N, 4) int64 ``[y1, x1, y2, x2]``."""
    rotations: np.ndarray
    """(N, 3, 3) float32, object → camera."""
    translations: np.ndarray
    """(N, 3) float32 metres."""
    sizes: np.ndarray
    """(N, 3) float32 metric extents, metres (file key ``gt_scales``)."""
    raw: dict
    """The stored arrays (for copying ground truth into result pickles unchanged)."""

    def __len__(self) -> int:
        return len(self.instance_ids)


def parse_label(data, path="<label>") -> HouseCatLabel:
    """Validate a loaded HouseCat6D label dict.

    Raises:
        DataFormatError: not a dict, a key missing, a count or shape mismatch, non-finite values,
            class ids outside 1…10, or no instance.
    """
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: label pickle holds {type(data).__name__}; expected a dict")
    missing = [key for key in LABEL_KEYS if key not in data]
    if missing:
        raise DataFormatError(f"{path}: label lacks key(s) {missing}; present keys: {sorted(data)}")
    arrays = {key: np.asarray(data[key]) for key in LABEL_KEYS}
    count = arrays["instance_ids"].reshape(-1).shape[0]
    if count == 0:
        raise DataFormatError(f"{path}: label has no instances")
    tails = {
        "instance_ids": (),
        "class_ids": (),
        "bboxes": (4,),
        "rotations": (3, 3),
        "translations": (3,),
        "gt_scales": (3,),
    }
    for key, tail in tails.items():
        array = arrays[key]
        if array.shape != (count, *tail):
            raise DataFormatError(f"{path}: label key {key!r} has shape {array.shape}; expected {(count, *tail)}")
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise DataFormatError(f"{path}: label key {key!r} must hold finite numbers; got dtype {array.dtype}")
    class_ids = arrays["class_ids"].astype(np.int64)
    if class_ids.min() < 1 or class_ids.max() > len(CATEGORY_NAMES):
        raise DataFormatError(f"{path}: label class_ids {class_ids.tolist()} outside 1..{len(CATEGORY_NAMES)}")
    return HouseCatLabel(
        instance_ids=arrays["instance_ids"].astype(np.int64),
        class_ids=class_ids,
        bboxes=arrays["bboxes"].astype(np.int64),
        rotations=arrays["rotations"].astype(np.float32),
        translations=arrays["translations"].astype(np.float32),
        sizes=arrays["gt_scales"].astype(np.float32),
        raw=arrays,
    )


def read_label(path: str | os.PathLike) -> HouseCatLabel:
    """Read and validate a HouseCat6D label pickle (see `parse_label`)."""
    return parse_label(read_pickle(path), path)


def ground_truth_record(label: HouseCatLabel) -> dict:
    """Ground-truth entries of a result pickle as the reference test reader builds them (§5.6).

    ``gt_RTs[i] = [[R_i·‖s_i‖, t_i], [0, 1]]`` (float64) and ``gt_scales = s_i/‖s_i‖`` from the stored
    arrays; ``gt_class_ids`` and ``gt_bboxes`` as stored; ``gt_handle_visibility`` None.
    """
    # Same dtype path as the reference: norms and products in the stored dtype, stored into float64.
    raw_sizes = label.raw["gt_scales"]
    norms = np.linalg.norm(raw_sizes, axis=1)
    transforms = np.tile(np.eye(4), (len(label), 1, 1))
    transforms[:, :3, :3] = label.raw["rotations"] * norms[:, None, None]
    transforms[:, :3, 3] = label.raw["translations"]
    return {
        "gt_class_ids": label.raw["class_ids"],
        "gt_bboxes": label.raw["bboxes"],
        "gt_RTs": transforms,
        "gt_scales": raw_sizes / norms[:, None],
        "gt_handle_visibility": None,
    }
