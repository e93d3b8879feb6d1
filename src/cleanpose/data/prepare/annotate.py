"""Per-frame annotation of a NOCS training frame: the ``_label.pkl`` the DPDN preprocessing writes.

See `docs/data_formats.md` §2.3–§2.4. For one raw frame (colour, depth, mask, NOCS map, meta) this walks
the meta lines in file order, applies the reference's filters and recovers each instance's pose:

* CAMERA: RANSAC + Umeyama similarity from the centred NOCS map to the back-projected objects-only
  depth (`cleanpose.data.prepare.align`), ``scale = s/1000``, ``translation = t/1000``.
* REAL: ``cv2.solvePnP`` of the NOCS map scaled by the model's metric diagonal against the pixel grid.

Filters (reference order): class 0 and meta ids absent from the mask are skipped; the CAMERA mug
``b9be7cfe653740eb7633a2dd89cec754`` is skipped; a box wider than 600 or taller than 440 pixels drops
the frame; fewer than 64 mask pixels with depth drops the instance; no instance left drops the frame;
an alignment failure drops the frame. Where the reference crashes (mask without the 255
background, a model without a size file, RANSAC with < 10 % inliers) the frame is dropped with a
reason instead. Mask ids without a meta line are ignored, as in the reference, and reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cleanpose.data.formats import encoding
from cleanpose.data.prepare.align import AlignmentError, ransac_similarity
from cleanpose.errors import DataFormatError

RAW_SUFFIXES = ("_color.png", "_coord.png", "_depth.png", "_mask.png", "_meta.txt")
"""Files a raw frame must have (the reference's existence check)."""

IMPROPER_MUG = "b9be7cfe653740eb7633a2dd89cec754"
"""CAMERA mug model left out of labels and point models (SPD/DPDN)."""

MAX_BOX_WIDTH, MAX_BOX_HEIGHT = 600, 440
"""A box wider or taller than this drops the whole frame (CAMERA rendering errors)."""

MIN_VALID_PIXELS = 64
"""Instances with fewer mask pixels of valid depth are skipped."""

MASK_BACKGROUND = 255


@dataclass(frozen=True)
class ModelSizes:
    """Size information of the object models a source's labels refer to.

    CAMERA keys are ``"<synset>/<model_id>"``, REAL keys the model name.
    """

    sizes: dict[str, np.ndarray]
    """key → (3,) float64 normalized box extents (label ``sizes``): CAMERA ``bbox.txt`` row 0 − row 1,
    REAL ``dims / (‖dims‖ + 1e-10)``."""
    diagonals: dict[str, float] = field(default_factory=dict)
    """REAL only: model name → ‖dims‖ in metres (the label scale)."""


@dataclass
class Annotation:
    """What annotating one frame gave."""

    label: dict | None
    """The ``_label.pkl`` dict (DPDN keys and types), or None when the frame is dropped."""
    reason: str | None = None
    """Why the frame was dropped (None when labelled)."""
    notes: list[str] = field(default_factory=list)
    """Instance-level events: skipped instances and ignored mask ids, one line each."""


def read_camera_sizes(models_dir: str | os.PathLike, subset: str) -> ModelSizes:
    """Sizes of the CAMERA models under ``obj_models/<subset>/<synset>/<id>/bbox.txt``.

    Raises:
        DataFormatError: a ``bbox.txt`` that is not a 2×3 (or larger) table of numbers.
    """
    sizes = {}
    for path in sorted(Path(models_dir, subset).glob("*/*/bbox.txt")):
        table = _load_table(path)
        if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] != 3:
            raise DataFormatError(f"{path}: bbox.txt has shape {table.shape}; expected rows (max corner, min corner)")
        sizes[f"{path.parent.parent.name}/{path.parent.name}"] = table[0, :] - table[1, :]
    return ModelSizes(sizes)


def read_real_sizes(models_dir: str | os.PathLike, subset: str) -> ModelSizes:
    """Sizes of the REAL models from ``obj_models/real_<subset>/<name>.txt`` (metric box extents).

    Raises:
        DataFormatError: a size file that does not hold 3 numbers.
    """
    sizes, diagonals = {}, {}
    for path in sorted(Path(models_dir, f"real_{subset}").glob("*.txt")):
        dims = _load_table(path)
        if dims.shape != (3,):
            raise DataFormatError(f"{path}: size file holds shape {dims.shape}; expected 3 extents in metres")
        name = path.name.split(".")[0]
        diagonals[name] = float(np.linalg.norm(dims))
        sizes[name] = dims / (np.linalg.norm(dims) + 1e-10)
    return ModelSizes(sizes, diagonals)


def _load_table(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{path}: not a table of numbers ({error})") from None


def backproject(depth_mm: np.ndarray, intrinsics: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Camera points of the mask pixels with depth > 0.

    Args:
        depth_mm: (H, W) uint16 millimetres.
        intrinsics: (3, 3) pixels.
        mask: (H, W) bool.

    Returns:
        (points (M, 3) float64 millimetres, OpenCV frame; (rows, columns) index arrays of the pixels).
    """
    rows, columns = np.where(np.logical_and(mask, depth_mm > 0))
    z = depth_mm[rows, columns]
    x = (columns - intrinsics[0, 2]) * z / intrinsics[0, 0]
    y = (rows - intrinsics[1, 2]) * z / intrinsics[1, 1]
    return np.stack((x, y, z), axis=1), (rows, columns)


def pose_from_pnp(coord: np.ndarray, mask: np.ndarray, diagonal: float, intrinsics: np.ndarray):
    """REAL pose by PnP of the metric NOCS points against their pixels (no RANSAC).

    Args:
        coord: (H, W, 3) float32 NOCS map (clipped to [0, 1] here).
        mask: (H, W) bool instance mask (every pixel, valid depth or not).
        diagonal: model box diagonal in metres (the label scale).
        intrinsics: (3, 3) pixels.

    Returns:
        (rotation (3, 3) float64, translation (3,) float64 metres).

    Raises:
        AlignmentError: OpenCV reports failure.
    """
    rows, columns = np.where(mask)
    # float32 object points: the reference computes np.float64 · float32 array, float32 under NumPy 1.x
    object_points = np.float32(diagonal) * (np.clip(coord[rows, columns, :], 0, 1) - np.float32(0.5))
    image_points = np.array([columns, rows]).transpose().astype(float)
    try:
        ok, rotation_vector, translation = cv2.solvePnP(
            object_points[:, :, None], image_points[:, :, None], intrinsics, np.zeros((4, 1))
        )
    except cv2.error as error:
        raise AlignmentError(f"solvePnP failed: {error}") from None
    if not ok:
        raise AlignmentError("solvePnP failed")
    rotation, _ = cv2.Rodrigues(rotation_vector)
    return rotation, np.squeeze(translation)


def missing_files(prefix: str) -> list[str]:
    """Suffixes of `RAW_SUFFIXES` that do not exist for a raw frame prefix."""
    return [suffix for suffix in RAW_SUFFIXES if not os.path.exists(prefix + suffix)]


@dataclass
class _Instance:
    row: encoding.MetaRow
    mask: np.ndarray
    """(H, W) bool, every pixel of the instance."""
    box: list[int]
    """[y1, x1, y2, x2], y2/x2 exclusive."""
    key: str
    """Key into `ModelSizes`."""


def select_instances(prefix: str, source: str, sizes: ModelSizes):
    """Read a raw frame and keep the instances the reference keeps (module docstring), in meta order.

    Returns:
        (depth (H, W) uint16 mm, coord (H, W, 3) float32, kept `_Instance` list, notes), or an
        `Annotation` without label when the frame is dropped.

    Raises:
        DataFormatError: a file is unreadable or corrupt (named in the message).
    """
    absent = missing_files(prefix)
    if absent:
        return Annotation(None, f"missing files: {', '.join(absent)}")
    depth = encoding.read_depth(prefix + "_depth.png")
    mask = encoding.read_mask(prefix + "_mask.png")
    coord = encoding.read_coord(prefix + "_coord.png")
    rows = encoding.read_meta(prefix + "_meta.txt")
    if depth.shape != mask.shape or coord.shape[:2] != mask.shape:
        return Annotation(None, f"image sizes differ: depth {depth.shape}, mask {mask.shape}, coord {coord.shape[:2]}")
    present = np.unique(mask).tolist()
    if present[-1] != MASK_BACKGROUND:
        return Annotation(None, f"mask has no background value {MASK_BACKGROUND}")
    present_ids = set(present[:-1])
    notes = [f"mask id {i} has no meta line (ignored)" for i in sorted(present_ids - {row.instance_id for row in rows})]
    kept = []
    for row in rows:
        if row.class_id == 0 or row.instance_id not in present_ids:
            continue
        key = f"{row.synset}/{row.model}" if source == "camera" else row.model
        if key not in sizes.sizes or (source == "real" and key not in sizes.diagonals):
            return Annotation(None, f"model {key} of instance {row.instance_id} missing from obj_models", notes)
        if row.model == IMPROPER_MUG:
            notes.append(f"instance {row.instance_id}: improper mug model {IMPROPER_MUG} skipped")
            continue
        instance_mask = mask == row.instance_id
        box = _box(instance_mask)
        if box[3] - box[1] > MAX_BOX_WIDTH or box[2] - box[0] > MAX_BOX_HEIGHT:
            return Annotation(
                None,
                f"instance {row.instance_id} box {box[3] - box[1]}x{box[2] - box[0]} px exceeds "
                f"{MAX_BOX_WIDTH}x{MAX_BOX_HEIGHT} (rendering error)",
                notes,
            )
        valid = int(np.logical_and(instance_mask, depth > 0).sum())
        if valid < MIN_VALID_PIXELS:
            notes.append(f"instance {row.instance_id}: {valid} pixels with depth < {MIN_VALID_PIXELS}")
            continue
        kept.append(_Instance(row, instance_mask, box, key))
    if not kept:
        return Annotation(None, "no instance left after the filters", notes)
    return depth, coord, kept, notes


def annotate_frame(
    prefix: str, source: str, sizes: ModelSizes, intrinsics: np.ndarray, generator: np.random.RandomState
) -> Annotation:
    """Label one raw training frame the way the DPDN preprocessing does.

    Args:
        prefix: raw frame path without suffix, e.g. ``…/camera/train/00012/0003``.
        source: ``"camera"`` (RANSAC-Umeyama on the objects-only ``_depth.png``) or ``"real"`` (PnP).
        sizes: the source's `ModelSizes`.
        intrinsics: (3, 3) camera intrinsics in pixels.
        generator: RANSAC draws (CAMERA); unused for REAL.

    Returns:
        `Annotation`; ``label`` is None with a ``reason`` when the frame is dropped.

    Raises:
        DataFormatError: a file is unreadable or corrupt (named in the message).
    """
    selection = select_instances(prefix, source, sizes)
    if isinstance(selection, Annotation):
        return selection
    depth, coord, kept, notes = selection
    count = len(kept)
    scales, rotations, translations = np.zeros(count), np.zeros((count, 3, 3)), np.zeros((count, 3))
    for i, instance in enumerate(kept):
        try:
            if source == "camera":
                points, (pixel_rows, pixel_columns) = backproject(depth, intrinsics, instance.mask)
                nocs = np.clip(coord[pixel_rows, pixel_columns, :], 0, 1) - np.float32(0.5)
                fit = ransac_similarity(nocs, points, generator)
                scales[i], rotations[i], translations[i] = fit.scale / 1000.0, fit.rotation, fit.translation / 1000.0
            else:
                rotations[i], translations[i] = pose_from_pnp(
                    coord, instance.mask, sizes.diagonals[instance.key], intrinsics
                )
                scales[i] = sizes.diagonals[instance.key]
        except AlignmentError as error:
            return Annotation(None, f"alignment of instance {instance.row.instance_id} failed: {error}", notes)
    label = {
        "class_ids": [instance.row.class_id for instance in kept],
        "bboxes": np.array([instance.box for instance in kept], dtype=np.int32),
        "scales": scales.astype(np.float32),
        "sizes": np.array([sizes.sizes[instance.key] for instance in kept]).astype(np.float32),
        "rotations": rotations.astype(np.float32),
        "translations": translations.astype(np.float32),
        "instance_ids": [instance.row.instance_id for instance in kept],
        "model_list": [instance.row.model for instance in kept],
    }
    return Annotation(label, None, notes)


GT_MATCH_BOX_TOLERANCE = 5
"""A test instance matches a ground-truth entry of its class whose box differs by at most this (sum of |Δ|, px)."""


def annotate_test_frame(
    prefix: str, source: str, sizes: ModelSizes, ground_truth: dict, model_extents: dict[str, np.ndarray]
) -> Annotation:
    """Label one raw test frame (CAMERA25 / REAL275) from the NOCS ground truth, as DPDN's and SPD's
    ``annotate_test_data`` do (DPDN's variant: mug poses are not re-labelled).

    Instances are selected as for training (`select_instances`); each is matched to the first
    ground-truth entry of the same class whose box is within `GT_MATCH_BOX_TOLERANCE`; its pose is
    ``s = ∛det(sR)``, ``R = sR / s``, ``t``, its handle visibility is copied.

    Args:
        prefix: raw frame path without suffix.
        source: ``"camera"`` or ``"real"``.
        sizes: the source's `ModelSizes` of the test models.
        ground_truth: the frame's NOCS ground-truth dict with ``gt_class_ids`` (M,), ``gt_bboxes`` (M, 4),
            ``gt_RTs`` (M, 4, 4) and ``gt_handle_visibility`` (or ``handle_visibility``) (M,).
        model_extents: model name → (3,) ``2·max|p|`` of its point model (label ``sizes``).

    Returns:
        `Annotation` with the DPDN test-label keys (``class_ids`` ndarray, ``bboxes``, ``instance_ids``,
        ``model_list``, ``sizes`` (N, 3) float64, ``scales``, ``rotations``, ``translations``, ``poses``
        (N, 4, 4) float32, ``handle_visibility``), or a reason when no label can be made.

    Raises:
        DataFormatError: a file is unreadable or corrupt, or the ground truth lacks a key.
    """
    selection = select_instances(prefix, source, sizes)
    if isinstance(selection, Annotation):
        return selection
    _, _, kept, notes = selection
    try:
        gt_classes, gt_boxes = np.asarray(ground_truth["gt_class_ids"]), np.asarray(ground_truth["gt_bboxes"])
        gt_poses = np.asarray(ground_truth["gt_RTs"])
        visibility = np.asarray(ground_truth.get("gt_handle_visibility", ground_truth.get("handle_visibility")))
    except KeyError as error:
        raise DataFormatError(f"{prefix}: ground truth has no key {error}") from None
    matches = []
    for instance in kept:
        match = next(
            (
                j
                for j in range(len(gt_classes))
                if gt_classes[j] == instance.row.class_id
                and np.sum(np.abs(np.asarray(instance.box) - gt_boxes[j])) <= GT_MATCH_BOX_TOLERANCE
            ),
            -1,
        )
        if match < 0 or match in matches:
            problem = "no" if match < 0 else "a duplicate"
            return Annotation(None, f"instance {instance.row.instance_id}: {problem} ground-truth match", notes)
        if instance.row.model not in model_extents:
            return Annotation(None, f"model {instance.row.model} missing from the test point models", notes)
        matches.append(match)
    count = len(kept)
    scales, rotations, translations = np.zeros(count), np.zeros((count, 3, 3)), np.zeros((count, 3))
    poses = np.zeros((count, 4, 4))
    for i, match in enumerate(matches):
        scaled_rotation = gt_poses[match][:3, :3]
        scales[i] = np.cbrt(np.linalg.det(scaled_rotation))
        rotations[i] = scaled_rotation / scales[i]
        translations[i] = gt_poses[match][:3, 3]
        pose = np.identity(4, dtype=np.float32)
        pose[:3, :3] = scales[i] * rotations[i]
        pose[:3, 3] = translations[i]
        poses[i] = pose
    label = {
        "class_ids": np.array([instance.row.class_id for instance in kept]),
        "bboxes": np.array([instance.box for instance in kept], dtype=np.int32),
        "instance_ids": [instance.row.instance_id for instance in kept],
        "model_list": [instance.row.model for instance in kept],
        "sizes": np.array([model_extents[instance.row.model] for instance in kept], dtype=np.float64),
        "scales": scales.astype(np.float32),
        "rotations": rotations.astype(np.float32),
        "translations": translations.astype(np.float32),
        "poses": poses.astype(np.float32),
        "handle_visibility": visibility[matches],
    }
    return Annotation(label, None, notes)


def _box(mask: np.ndarray) -> list[int]:
    """``[y1, x1, y2, x2]`` of a non-empty mask, y2/x2 exclusive."""
    columns = np.where(np.any(mask, axis=0))[0]
    rows = np.where(np.any(mask, axis=1))[0]
    return [int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1]
