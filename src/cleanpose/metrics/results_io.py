"""Reading and checking per-image result dicts (docs/metrics.md §1, §12).

A result dict holds one test image: ``gt_class_ids`` (n,), ``gt_RTs`` (n, 4, 4), ``gt_scales`` (n, 3),
optional ``gt_handle_visibility`` (n,), ``pred_class_ids`` (m,), ``pred_scores`` (m,), ``pred_RTs``
(m, 4, 4), ``pred_scales`` (m, 3); other keys are ignored. Poses are camera-from-object similarities
``[[s·R, t], [0, 0, 0, 1]]`` (metres, OpenCV camera frame), class ids are 1-based.

Loading pickles executes code stored in them: only read result files you trust.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from cleanpose.errors import DataFormatError
from cleanpose.metrics.datasets import DatasetSpec, get_dataset

logger = logging.getLogger(__name__)

__all__ = ["LoadedResults", "ResultArrays", "collect_results", "find_result_files", "load_results"]

ORTHONORMALITY_TOLERANCE = 1e-3
"""Largest accepted Frobenius norm of ``RᵀR − I`` after removing the scale (docs/metrics.md §12)."""

_GT_KEYS = {"gt_class_ids": (), "gt_RTs": (4, 4), "gt_scales": (3,)}
_PRED_KEYS = {"pred_class_ids": (), "pred_scores": (), "pred_RTs": (4, 4), "pred_scales": (3,)}


@dataclass(frozen=True)
class ResultArrays:
    """All instances of a result set, flattened; images with no gt and no prediction are dropped.

    Row ``i`` of the ``gt_*`` arrays is instance ``gt_instance[i]`` of image ``gt_image[i]``;
    likewise for ``pred_*``.
    """

    origins: list[str]
    """Per kept image: where it came from (``file.pkl``, ``file.pkl[3]`` or ``results[3]``)."""
    image_source: np.ndarray
    """(images,) int64 position of each kept image in the result sequence that was collected."""
    gt_image: np.ndarray
    """(n,) int64 index into ``origins``."""
    gt_instance: np.ndarray
    """(n,) int64 position in the image's gt arrays."""
    gt_class: np.ndarray
    """(n,) int64 class id, 1-based."""
    gt_pose: np.ndarray
    """(n, 4, 4) float64 camera-from-object similarity, metres."""
    gt_extents: np.ndarray
    """(n, 3) float64 box sides, normalized object frame."""
    gt_handle_visible: np.ndarray
    """(n,) bool; False only where the metric treats a mug as handle-less (NOCS, visibility 0)."""
    pred_image: np.ndarray
    """(m,) int64."""
    pred_instance: np.ndarray
    """(m,) int64."""
    pred_class: np.ndarray
    """(m,) int64 class id, 1-based."""
    pred_pose: np.ndarray
    """(m, 4, 4) float64."""
    pred_extents: np.ndarray
    """(m, 3) float64."""
    pred_score: np.ndarray
    """(m,) float64 detection score (only its order matters)."""


def _as_array(result: dict, key: str, origin: str) -> np.ndarray:
    try:
        return np.asarray(result[key])
    except KeyError:
        raise DataFormatError(f"{origin}: missing key {key!r}") from None
    except Exception as error:  # ragged lists and the like
        raise DataFormatError(f"{origin}: key {key!r} is not an array: {error}") from None


def _shaped(array: np.ndarray, length: int | None, inner: tuple[int, ...], origin: str, key: str) -> np.ndarray:
    if array.size == 0 and (length in (None, 0)):
        return np.zeros((0, *inner))
    if array.ndim != 1 + len(inner) or tuple(array.shape[1:]) != inner or (length is not None and len(array) != length):
        dims = [str(length) if length is not None else "n", *map(str, inner)]
        expected = f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
        raise DataFormatError(f"{origin}: key {key!r} has shape {array.shape}; expected {expected}")
    if array.dtype.kind not in "biuf":
        raise DataFormatError(f"{origin}: key {key!r} has dtype {array.dtype}; expected numbers")
    return array


def _check_structure(result, spec: DatasetSpec, origin: str) -> tuple[dict[str, np.ndarray], bool]:
    """Arrays of one result dict with checked shapes; the flag says whether handle visibility was missing."""
    if not isinstance(result, dict):
        raise DataFormatError(f"{origin}: expected a dict of result arrays; got {type(result).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for keys in (_GT_KEYS, _PRED_KEYS):
        length = None
        for key, inner in keys.items():
            arrays[key] = _shaped(_as_array(result, key, origin), length, inner, origin, key)
            length = len(arrays[key])
    num_gts = len(arrays["gt_class_ids"])
    missing_handles = "gt_handle_visibility" not in result
    if spec.handle_class is None or missing_handles:
        arrays["gt_handle_visibility"] = np.ones(num_gts)
    else:
        handles = _as_array(result, "gt_handle_visibility", origin)
        if handles.size == 0 and num_gts == 0:
            handles = np.ones(0)
        if handles.shape != (num_gts,):
            raise DataFormatError(
                f"{origin}: key 'gt_handle_visibility' has shape {handles.shape}; expected ({num_gts},), "
                f"one entry per gt"
            )
        arrays["gt_handle_visibility"] = _shaped(handles, num_gts, (), origin, "gt_handle_visibility")
    return arrays, missing_handles


def _check_values(prefix: str, arrays: dict, image, instance, origins, spec: DatasetSpec) -> None:
    """Vectorized value checks of all ``prefix`` ("gt" or "pred") instances; raises on the first bad one."""

    def check(bad: np.ndarray, key: str, what: str, values=None) -> None:
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            detail = "" if values is None else f" ({np.asarray(values)[first].tolist()})"
            raise DataFormatError(f"{origins[image[first]]}: key {key!r}, instance {instance[first]}: {what}{detail}")

    class_key, pose_key, extent_key = f"{prefix}_class_ids", f"{prefix}_RTs", f"{prefix}_scales"
    classes = arrays[class_key]
    bad = (classes != np.round(classes)) | (classes < 1) | (classes > spec.num_classes)
    check(bad, class_key, f"class id outside 1..{spec.num_classes} ({spec.name})", classes)
    poses = arrays[pose_key]
    check(~np.isfinite(poses).all(axis=(1, 2)), pose_key, "contains NaN or inf")
    last_row = poses[:, 3]
    check(
        (last_row != np.array([0.0, 0.0, 0.0, 1.0])).any(axis=1),
        pose_key,
        "last row is not exactly [0, 0, 0, 1]",
        last_row,
    )
    determinant = np.linalg.det(poses[:, :3, :3])
    check(~(determinant > 0), pose_key, "det(RT[:3, :3]) <= 0 (a reflection or singular)", determinant)
    rotation = poses[:, :3, :3] / np.cbrt(determinant)[:, None, None]
    deviation = np.linalg.norm(np.swapaxes(rotation, 1, 2) @ rotation - np.eye(3), axis=(1, 2))
    check(
        deviation > ORTHONORMALITY_TOLERANCE,
        pose_key,
        f"RT[:3, :3] is not a scaled rotation, |R^T R - I| > {ORTHONORMALITY_TOLERANCE}",
        deviation,
    )
    extents = arrays[extent_key]
    check(~np.isfinite(extents).all(axis=1), extent_key, "contains NaN or inf")
    if prefix == "gt":  # predicted extents may be <= 0: the official box is the same corner set as for |e|
        check(~(extents > 0).all(axis=1), extent_key, "box extents must be > 0", extents)
    if prefix == "pred":
        check(~np.isfinite(arrays["pred_scores"]), "pred_scores", "contains NaN or inf")


def collect_results(
    results: Sequence[dict], dataset: str | DatasetSpec, origins: Sequence[str] | None = None
) -> ResultArrays:
    """Check a result set (docs/metrics.md §12) and flatten it into ``ResultArrays``.

    Args:
        results: one dict per image, in image order (the order matters only for equal scores).
        dataset: ``"nocs"`` or ``"housecat6d"`` (or its ``DatasetSpec``).
        origins: per dict, a name for error messages; default ``results[i]``.
    Returns:
        The flattened instances; NOCS: a missing ``gt_handle_visibility`` counts as all 1 (one warning
        for the whole set); HouseCat6D: handle visibility is always 1.
    Raises:
        DataFormatError: naming the dict, key, instance and value that is wrong.
    """
    spec = dataset if isinstance(dataset, DatasetSpec) else get_dataset(dataset)
    if origins is None:
        origins = [f"results[{index}]" for index in range(len(results))]
    if len(origins) != len(results):
        raise ValueError(f"origins has {len(origins)} entries for {len(results)} results")
    kept_origins: list[str] = []
    kept_positions: list[int] = []
    parts: dict[str, list[np.ndarray]] = {key: [] for key in (*_GT_KEYS, *_PRED_KEYS, "gt_handle_visibility")}
    gt_counts, pred_counts = [], []
    num_missing_handles = 0
    for position, (result, origin) in enumerate(zip(results, origins)):
        arrays, missing_handles = _check_structure(result, spec, origin)
        num_gts, num_preds = len(arrays["gt_class_ids"]), len(arrays["pred_class_ids"])
        num_missing_handles += missing_handles
        if num_gts == 0 and num_preds == 0:
            continue
        kept_origins.append(origin)
        kept_positions.append(position)
        gt_counts.append(num_gts)
        pred_counts.append(num_preds)
        for key, value in arrays.items():
            parts[key].append(value)
    if num_missing_handles and spec.handle_class is not None:
        logger.warning(
            "%d result dicts have no 'gt_handle_visibility'; their gts count as handle visible", num_missing_handles
        )
    shapes = {**_GT_KEYS, **_PRED_KEYS, "gt_handle_visibility": ()}
    flat = {
        key: np.concatenate(value).astype(np.float64) if value else np.zeros((0, *shapes[key]))
        for key, value in parts.items()
    }
    gt_image = np.repeat(np.arange(len(kept_origins)), gt_counts).astype(np.int64)
    pred_image = np.repeat(np.arange(len(kept_origins)), pred_counts).astype(np.int64)
    gt_instance = _positions(gt_counts)
    pred_instance = _positions(pred_counts)
    _check_values("gt", flat, gt_image, gt_instance, kept_origins, spec)
    _check_values("pred", flat, pred_image, pred_instance, kept_origins, spec)
    gt_class = flat["gt_class_ids"].astype(np.int64)
    handle_visible = flat["gt_handle_visibility"] != 0
    if spec.handle_class is not None:
        # the reference reads handle visibility only for the handle class; every other gt counts as 1
        handle_visible |= gt_class != spec.class_names.index(spec.handle_class) + 1
    return ResultArrays(
        origins=kept_origins,
        image_source=np.array(kept_positions, dtype=np.int64),
        gt_image=gt_image,
        gt_instance=gt_instance,
        gt_class=gt_class,
        gt_pose=flat["gt_RTs"],
        gt_extents=flat["gt_scales"],
        gt_handle_visible=handle_visible,
        pred_image=pred_image,
        pred_instance=pred_instance,
        pred_class=flat["pred_class_ids"].astype(np.int64),
        pred_pose=flat["pred_RTs"],
        pred_extents=flat["pred_scales"],
        pred_score=flat["pred_scores"],
    )


def _positions(counts: list[int]) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(int(counts.sum()), dtype=np.int64) - starts


def find_result_files(path: str | Path, dataset: str) -> list[Path]:
    """The result pickles of a folder, in evaluation order (docs/metrics.md §1.2).

    NOCS: ``results*.pkl`` directly inside ``path`` if there are any, else every ``*.pkl`` below it;
    HouseCat6D: every ``*.pkl`` below it. Sorted by path relative to ``path``.

    Raises:
        DataFormatError: no pickle found.
    """
    path = Path(path)
    spec = get_dataset(dataset)
    files = sorted(path.glob("results*.pkl")) if spec.name == "nocs" else []
    if not files:
        files = list(path.rglob("*.pkl"))
    files = sorted((file for file in files if file.is_file()), key=lambda file: file.relative_to(path).as_posix())
    if not files:
        raise DataFormatError(f"no result pickles under {path}")
    return files


class LoadedResults(NamedTuple):
    """A result set as read from disk."""

    results: list[dict]
    """One dict per image, in evaluation order."""
    origins: list[str]
    """Per dict, where it came from: ``file.pkl``, or ``file.pkl[i]`` for entry i of a list."""


def load_results(path: str | Path, dataset: str, *, progress: bool = False) -> LoadedResults:
    """Read a result set from a folder of pickles, from one pickle, or from a ``.npz`` results archive.

    Each pickle holds one result dict or a list of them (spliced in, in order). Loading a pickle
    executes code stored in it: only load files you trust. A ``.npz`` archive (``results_npz``) is read
    without pickle. The dicts are returned as read; they are
    checked by ``collect_results`` (``evaluate_results`` does that).

    Args:
        path: a folder (see ``find_result_files``), a pickle file, or a ``.npz`` results archive.
        dataset: ``"nocs"`` or ``"housecat6d"``.
        progress: show a progress bar over the files.
    Returns:
        ``LoadedResults(results, origins)``; pass both to ``evaluate_results``.
    Raises:
        DataFormatError: missing path, no pickles, an unreadable pickle, or one holding neither a dict
            nor a list of dicts.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        from cleanpose.metrics.results_npz import load_results_npz  # that module builds on this one

        get_dataset(dataset)
        return load_results_npz(path)
    if path.is_dir():
        files = find_result_files(path, dataset)
    elif path.is_file():
        get_dataset(dataset)
        files = [path]
    else:
        raise DataFormatError(f"{path}: no such file or folder")
    results: list[dict] = []
    origins: list[str] = []
    for file in tqdm(files, desc="reading results", unit="file", disable=not progress or len(files) < 2):
        try:
            with open(file, "rb") as handle:
                content = pickle.load(handle)
        except Exception as error:
            raise DataFormatError(f"{file}: cannot read the pickle ({type(error).__name__}: {error})") from None
        if isinstance(content, dict):
            results.append(content)
            origins.append(str(file))
        elif isinstance(content, list):
            for index, entry in enumerate(content):
                if not isinstance(entry, dict):
                    raise DataFormatError(f"{file}[{index}]: expected a result dict; got {type(entry).__name__}")
                results.append(entry)
                origins.append(f"{file}[{index}]")
        else:
            raise DataFormatError(f"{file}: expected a result dict or a list of them; got {type(content).__name__}")
    return LoadedResults(results, origins)
