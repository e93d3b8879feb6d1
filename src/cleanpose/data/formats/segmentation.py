"""Reader for the distributed NOCS segmentation results and writer of per-image result records.

See `docs/data_formats.md` §2.8, §4.4, P2–P4, P22. One pickle per test image,
``results_*.pkl``, found in ``results/nocs_results/{real_test,val}`` (where the reference test code
looks) or else ``segmentation_results/{REAL275,CAMERA25}`` (where its README puts them); the
contents are identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cleanpose.data.formats.encoding import read_pickle
from cleanpose.errors import DataFormatError

RESULT_FOLDERS = {
    "real": (("results", "nocs_results", "real_test"), ("segmentation_results", "REAL275")),
    "camera": (("results", "nocs_results", "val"), ("segmentation_results", "CAMERA25")),
}
"""Candidate folders per test set, in order of preference (§2.1)."""

GT_KEYS = ("gt_class_ids", "gt_bboxes", "gt_RTs", "gt_scales", "gt_handle_visibility")
"""Ground-truth keys copied unchanged from a segmentation pickle into the result pickle."""


def find_results_dir(root: str | os.PathLike, dataset: str) -> Path:
    """Folder holding the segmentation results of ``"real"`` (REAL275) or ``"camera"`` (CAMERA25).

    Raises:
        ValueError: unknown dataset name.
        DataFormatError: none of the candidate folders exists (the message lists them).
    """
    if dataset not in RESULT_FOLDERS:
        raise ValueError(f"unknown NOCS test set {dataset!r}; expected 'real' or 'camera'")
    candidates = [Path(root, *parts) for parts in RESULT_FOLDERS[dataset]]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise DataFormatError(
        f"no segmentation results for {dataset!r}: none of {', '.join(str(c) for c in candidates)} exists"
    )


def list_result_files(folder: str | os.PathLike) -> list[Path]:
    """``results_*.pkl`` files of a folder, sorted by name.

    Raises:
        DataFormatError: the folder holds no such file.
    """
    files = sorted(Path(folder).glob("results_*.pkl"))
    if not files:
        raise DataFormatError(f"{folder}: no results_*.pkl files")
    return files


def frame_prefix_from_image_path(image_path: str) -> str:
    """Relative frame prefix from a stored ``image_path`` (docs/data_formats.md P3).

    The reference drops the first five characters, assuming ``data/``; we strip a leading ``data/``
    only when present (and a leading ``./``), and otherwise use the path as it is.
    """
    path = str(image_path).replace("\\", "/")
    if path.startswith("./"):
        path = path[2:]
    if path.startswith("data/"):
        path = path[len("data/") :]
    return str(PurePosixPath(path))


@dataclass(frozen=True)
class SegmentationResult:
    """Detections and ground truth of one test image (M detections, N ground-truth objects)."""

    source: Path
    """The pickle this was read from."""
    frame_prefix: str
    """Relative frame prefix under the dataset root, e.g. ``real/test/scene_1/0000``."""
    pred_class_ids: np.ndarray
    """(M,) int64, 1-based."""
    pred_bboxes: np.ndarray
    """(M, 4) int64 ``[y1, x1, y2, x2]``."""
    pred_scores: np.ndarray
    """(M,) as stored."""
    pred_masks: np.ndarray
    """(H, W, M) bool."""
    ground_truth: dict
    """The `GT_KEYS` entries exactly as stored (copied into the result pickle)."""

    def __len__(self) -> int:
        return len(self.pred_class_ids)


def parse_segmentation_result(data, path) -> SegmentationResult:
    """Validate a loaded segmentation pickle.

    Raises:
        DataFormatError: a key is missing, counts disagree between the ``pred_*`` entries, or the
            mask array is not (H, W, M).
    """
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: segmentation pickle holds {type(data).__name__}; expected a dict")
    missing = [
        key
        for key in ("image_path", "pred_class_ids", "pred_bboxes", "pred_scores", "pred_masks", *GT_KEYS)
        if key not in data
    ]
    if missing:
        raise DataFormatError(f"{path}: segmentation result lacks key(s) {missing}")
    class_ids = np.asarray(data["pred_class_ids"]).reshape(-1).astype(np.int64)
    count = len(class_ids)
    bboxes = np.asarray(data["pred_bboxes"]).reshape(-1, 4) if count else np.zeros((0, 4), np.int64)
    scores = np.asarray(data["pred_scores"]).reshape(-1)
    masks = np.asarray(data["pred_masks"])
    if len(bboxes) != count or len(scores) != count:
        raise DataFormatError(
            f"{path}: {count} pred_class_ids but {len(bboxes)} pred_bboxes and {len(scores)} pred_scores"
        )
    if masks.ndim != 3 or masks.shape[2] != count:
        raise DataFormatError(f"{path}: pred_masks has shape {masks.shape}; expected (H, W, {count})")
    if count and (class_ids.min() < 1):
        raise DataFormatError(f"{path}: pred_class_ids {class_ids.tolist()} must be 1-based")
    gt = {key: data[key] for key in GT_KEYS}
    gt_count = len(np.asarray(gt["gt_class_ids"]).reshape(-1))
    for key in GT_KEYS[1:]:
        if len(np.asarray(gt[key])) != gt_count:
            raise DataFormatError(f"{path}: {key} has {len(np.asarray(gt[key]))} entries; gt_class_ids has {gt_count}")
    return SegmentationResult(
        source=Path(path),
        frame_prefix=frame_prefix_from_image_path(data["image_path"]),
        pred_class_ids=class_ids,
        pred_bboxes=bboxes.astype(np.int64),
        pred_scores=scores,
        pred_masks=masks != 0,
        ground_truth=gt,
    )


def read_segmentation_result(path: str | os.PathLike) -> SegmentationResult:
    """Read and validate one ``results_*.pkl`` (see `parse_segmentation_result`)."""
    return parse_segmentation_result(read_pickle(path), path)


def result_record(
    ground_truth: dict,
    pred_class_ids: np.ndarray,
    pred_bboxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_rotations: np.ndarray,
    pred_translations: np.ndarray,
    pred_sizes: np.ndarray,
) -> dict:
    """The per-image result dict that ``cleanpose evaluate`` reads (§4.4).

    Args:
        ground_truth: the `GT_KEYS` of the image, copied as stored (``gt_handle_visibility`` may be
            None for HouseCat6D).
        pred_class_ids: (K,) 1-based class ids of the kept detections.
        pred_bboxes: (K, 4) boxes of the kept detections.
        pred_scores: (K,) scores of the kept detections.
        pred_rotations: (K, 3, 3) predicted rotations, object → camera.
        pred_translations: (K, 3) metres, camera frame.
        pred_sizes: (K, 3) predicted metric extents, metres.

    Returns:
        dict with the ground-truth keys, ``pred_class_ids``, ``pred_bboxes``, ``pred_scores``,
        ``pred_RTs`` (K, 4, 4) float32 ``[[R·‖ŝ‖, t], [0, 1]]`` and ``pred_scales`` (K, 3) float32
        ``ŝ/‖ŝ‖``. K may be 0 (docs/data_formats.md P5: an image without usable detection keeps its ground truth).
    """
    rotations = np.asarray(pred_rotations, dtype=np.float32).reshape(-1, 3, 3)
    translations = np.asarray(pred_translations, dtype=np.float32).reshape(-1, 3)
    sizes = np.asarray(pred_sizes, dtype=np.float32).reshape(-1, 3)
    norms = np.linalg.norm(sizes, axis=1)
    transforms = np.tile(np.eye(4, dtype=np.float32), (len(rotations), 1, 1))
    transforms[:, :3, :3] = rotations * norms[:, None, None]
    transforms[:, :3, 3] = translations
    record = dict(ground_truth)
    record.update(
        pred_class_ids=np.asarray(pred_class_ids),
        pred_bboxes=np.asarray(pred_bboxes),
        pred_scores=np.asarray(pred_scores),
        pred_RTs=transforms,
        pred_scales=(sizes / norms[:, None]).astype(np.float32) if len(sizes) else sizes,
    )
    return record
