"""Validate a dataset tree: every file the readers open, label consistency, and counts.

`check_dataset` walks the splits present under a root (NOCS: CAMERA/REAL training lists and the
REAL275/CAMERA25 segmentation results; HouseCat6D: training and test scenes), reads every file a
dataset class would read, and collects problems naming the file. Errors are problems that make the
readers raise; warnings are what the loaders skip and count (missing CAMERA composed depth, a label
instance absent from its mask). Counts are frames per split and instances per category and split.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleanpose.data.formats import housecat6d, nocs, segmentation
from cleanpose.data.formats.encoding import read_color, read_depth, read_mask
from cleanpose.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

FORMATS = ("nocs", "housecat6d")


@dataclass(frozen=True)
class Problem:
    """One finding; `path` names the file (or folder) concerned."""

    severity: str
    """``"error"`` (a reader would fail) or ``"warning"`` (a loader would skip and count)."""
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


@dataclass
class CheckReport:
    """Result of `check_dataset`."""

    root: Path
    format: str
    problems: list[Problem] = field(default_factory=list)
    frames: dict[str, int] = field(default_factory=dict)
    """Frames checked per split."""
    instances: dict[str, Counter] = field(default_factory=dict)
    """Instances per category name, per split (training labels, or test ground truth)."""

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def lines(self) -> list[str]:
        """Human-readable report: one line per problem, then the counts."""
        out = [str(problem) for problem in self.problems]
        for split, count in self.frames.items():
            categories = sorted(self.instances.get(split, {}).items())
            per_category = ", ".join(f"{name} {number}" for name, number in categories)
            out.append(f"{split}: {count} frames; instances: {per_category or 'none'}")
        out.append(f"{self.root} ({self.format}): {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return out


def detect_format(root: str | os.PathLike) -> str:
    """``"nocs"`` if the root has ``camera/``, ``real/``, ``results/`` or ``segmentation_results/``;
    ``"housecat6d"`` if it has ``scene*``/``test_scene*`` folders.

    Raises:
        DataFormatError: the root does not exist or looks like neither.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: dataset folder does not exist")
    if any((root / name).is_dir() for name in ("camera", "real", "results", "segmentation_results")):
        return "nocs"
    if any(root.glob("scene*")) or any(root.glob("test_scene*")):
        return "housecat6d"
    raise DataFormatError(
        f"{root}: cannot tell the dataset format (no camera/, real/ or scene* folders); pass --format"
    )


class _Checker:
    def __init__(self, report: CheckReport, limit: int | None, progress: bool) -> None:
        self.report = report
        self.limit = limit
        self.progress = progress

    def add(self, severity: str, path, message: str) -> None:
        self.report.problems.append(Problem(severity, str(path), message))

    def attempt(self, function, *args):
        """Call a reader; a `DataFormatError` becomes an error problem (its message names the file)."""
        try:
            return function(*args)
        except DataFormatError as error:
            self.report.problems.append(Problem("error", str(args[0]) if args else "", str(error)))
            return None

    def items(self, sequence, split: str):
        sequence = list(sequence)[: self.limit] if self.limit else list(sequence)
        return tqdm(sequence, desc=f"check {split}", disable=not self.progress, leave=False)

    def sizes_agree(self, shapes: dict) -> None:
        shapes = {path: shape[:2] for path, shape in shapes.items() if shape is not None}
        if len(set(shapes.values())) > 1:
            listing = ", ".join(f"{path} {rows}x{cols}" for path, (rows, cols) in shapes.items())
            self.add("error", next(iter(shapes)), f"frame images differ in size: {listing}")


def _check_nocs(checker: _Checker, root: Path) -> None:
    report = checker.report
    found_any = False
    for source in nocs.SOURCES:
        list_path = root / nocs.TRAIN_LISTS[source]
        if not list_path.exists():
            continue
        found_any = True
        split = f"{source}/train"
        prefixes = checker.attempt(nocs.train_frames, root, source)
        if prefixes is None:
            continue
        models = checker.attempt(nocs.read_models, root / nocs.MODEL_FILES[source])
        counts = report.instances.setdefault(split, Counter())
        report.frames[split] = 0
        for prefix in checker.items(prefixes, split):
            report.frames[split] += 1
            shapes = {}
            color_path = nocs.frame_path(root, prefix, "_color.png")
            color = checker.attempt(read_color, color_path)
            shapes[color_path] = None if color is None else color.shape
            mask_path = nocs.frame_path(root, prefix, "_mask.png")
            mask = checker.attempt(read_mask, mask_path)
            shapes[mask_path] = None if mask is None else mask.shape
            depth_path = nocs.depth_path(root, prefix)
            if source == "camera" and not depth_path.exists():
                checker.add("warning", depth_path, "composed depth missing; the loader skips this frame")
            else:
                depth = checker.attempt(read_depth, depth_path)
                shapes[depth_path] = None if depth is None else depth.shape
                if depth is not None and not depth.any():
                    checker.add("warning", depth_path, "depth is zero everywhere; every draw of this frame is skipped")
            checker.sizes_agree(shapes)
            label_path = nocs.frame_path(root, prefix, "_label.pkl")
            label = checker.attempt(nocs.read_label, label_path)
            if label is None:
                continue
            for class_id in label.class_ids:
                counts[nocs.CATEGORY_NAMES[class_id - 1]] += 1
            if models is not None:
                absent = sorted({name for name in label.model_names if name not in models})
                if absent:
                    checker.add("error", label_path, f"model(s) {absent} not in {nocs.MODEL_FILES[source]}")
            if mask is not None:
                present = set(np.unique(mask).tolist())
                absent_ids = [int(i) for i in label.instance_ids if int(i) not in present]
                if absent_ids:
                    checker.add("warning", label_path, f"instance id(s) {absent_ids} do not occur in {mask_path.name}")
    for dataset in ("real", "camera"):
        try:
            folder = segmentation.find_results_dir(root, dataset)
        except DataFormatError:
            continue
        found_any = True
        split = f"{dataset}/test ({folder.relative_to(root)})"
        files = checker.attempt(segmentation.list_result_files, folder)
        if files is None:
            continue
        counts = report.instances.setdefault(split, Counter())
        report.frames[split] = 0
        for result_path in checker.items(files, split):
            report.frames[split] += 1
            result = checker.attempt(segmentation.read_segmentation_result, result_path)
            if result is None:
                continue
            for class_id in np.asarray(result.ground_truth["gt_class_ids"]).reshape(-1):
                name = nocs.CATEGORY_NAMES[int(class_id) - 1] if 1 <= class_id <= 6 else f"class {class_id}"
                counts[name] += 1
            prefix = result.frame_prefix
            if not prefix.startswith(("camera/", "real/")):
                checker.add("error", result_path, f"image_path {prefix!r} does not start with camera/ or real/")
                continue
            color_path = nocs.frame_path(root, prefix, "_color.png")
            color = checker.attempt(read_color, color_path)
            depth_path = nocs.depth_path(root, prefix)
            shapes = {
                color_path: None if color is None else color.shape,
                result_path: result.pred_masks.shape if len(result) else None,
            }
            if dataset == "camera" and not depth_path.exists():
                checker.add("warning", depth_path, "composed depth missing; this image gets zero predictions")
            else:
                depth = checker.attempt(read_depth, depth_path)
                shapes[depth_path] = None if depth is None else depth.shape
            checker.sizes_agree(shapes)
    if not found_any:
        checker.add(
            "error",
            root,
            "no NOCS split found (camera/train_list.txt, real/train_list.txt, "
            "results/nocs_results/ or segmentation_results/)",
        )


def _check_housecat6d(checker: _Checker, root: Path) -> None:
    report = checker.report
    found_any = False
    for split in ("train", "test"):
        try:
            scenes = housecat6d.list_scenes(root, split)
        except DataFormatError:
            continue
        found_any = True
        counts = report.instances.setdefault(split, Counter())
        report.frames[split] = 0
        frames = []
        for scene in scenes:
            checker.attempt(housecat6d.read_intrinsics, scene / "intrinsics.txt")
            if split == "train" and not (scene / "meta.txt").exists():
                checker.add(
                    "warning",
                    scene / "meta.txt",
                    "meta file not found (cleanpose does not need it; the reference training script opens it)",
                )
            frames.extend(housecat6d.list_frames(scene))
        for frame in checker.items(frames, split):
            report.frames[split] += 1
            color = checker.attempt(read_color, frame.color_path)
            depth = checker.attempt(read_depth, frame.depth_path)
            mask = checker.attempt(read_mask, frame.instance_path)
            checker.sizes_agree(
                {
                    frame.color_path: None if color is None else color.shape,
                    frame.depth_path: None if depth is None else depth.shape,
                    frame.instance_path: None if mask is None else mask.shape,
                }
            )
            label = checker.attempt(housecat6d.read_label, frame.label_path)
            if label is None:
                continue
            for class_id in label.class_ids:
                counts[housecat6d.CATEGORY_NAMES[class_id - 1]] += 1
            if mask is not None:
                present = set(np.unique(mask).tolist())
                absent_ids = [int(i) for i in label.instance_ids if int(i) not in present]
                if absent_ids:
                    checker.add(
                        "warning",
                        frame.label_path,
                        f"instance id(s) {absent_ids} do not occur in {frame.instance_path.name}",
                    )
    if not found_any:
        checker.add("error", root, "no HouseCat6D scene with an rgb/ folder (scene*/ or test_scene*/)")


def check_dataset(
    root: str | os.PathLike, format: str | None = None, limit: int | None = None, progress: bool = True
) -> CheckReport:
    """Validate the dataset tree at `root`.

    Args:
        root: dataset root.
        format: ``"nocs"`` or ``"housecat6d"``; None detects it (`detect_format`).
        limit: check at most this many frames per split (None: all).
        progress: show tqdm progress bars.

    Returns:
        The report; ``report.ok`` is False when any error was found.

    Raises:
        ConfigError: unknown format.
        DataFormatError: a root that does not exist or cannot be recognized.
    """
    root = Path(root)
    if format is None:
        format = detect_format(root)
    elif format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    elif not root.is_dir():
        raise DataFormatError(f"{root}: dataset folder does not exist")
    report = CheckReport(root=root, format=format)
    checker = _Checker(report, limit, progress)
    if format == "nocs":
        _check_nocs(checker, root)
    else:
        _check_housecat6d(checker, root)
    return report
