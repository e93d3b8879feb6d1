"""`prepare`: the NOCS downloads → the layout after SPD/DPDN preprocessing, in parallel and resumable.

Steps (`docs/data_formats.md` §2): list files of every split; per frame, the raw files placed in the
prepared tree (hard links) and, for training frames, ``_label.pkl`` (`annotate_frame`); for test frames
whose NOCS ground truth is at hand, DPDN's test ``_label.pkl`` with the mug handle visibility
(`annotate_test_frame`) and ``val_list.txt`` / ``test_list.txt``; the CAMERA
composed depth placed under ``camera_full_depths/``; ``obj_models/<split>.pkl`` and ``mug_meta.pkl``
(`cleanpose.data.prepare.models`) with the raw meshes placed beside them; the NOCS ground truth
(``gts/``) and segmentation results, when present, placed where the test code opens them;
``train_list.txt`` with the frames that got a label; a report of every dropped frame and skipped
instance with its reason (``prepare_report.json``).

Every file is written atomically (temporary name, then rename), the label last within a frame, so an
interrupted run leaves no half-written file and ``resume=True`` continues from the frames done.
Random draws (RANSAC, surface sampling) come from a `numpy.random.RandomState` seeded per frame /
per model by `stream_seed`, so results do not depend on the number of workers or on resuming.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import time
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleanpose.data.formats import encoding
from cleanpose.data.formats.nocs import CAMERA_INTRINSICS, REAL_INTRINSICS
from cleanpose.data.prepare import models as spd_models
from cleanpose.data.prepare.annotate import (
    RAW_SUFFIXES,
    ModelSizes,
    annotate_frame,
    annotate_test_frame,
    missing_files,
    read_camera_sizes,
    read_real_sizes,
)
from cleanpose.data.prepare.layout import SPLITS, RawLayout, list_entries, place_file, place_tree
from cleanpose.errors import ConfigError, DataFormatError, OutputError
from cleanpose.fileio import ensure_writable_folder

logger = logging.getLogger(__name__)

MARKER_FILE = "cleanpose_prepare.json"
"""Settings of the run that wrote the folder; `resume` requires the same raw folder and seed."""

REPORT_FILE = "prepare_report.json"

RESULTS_SETS = {"camera_val": ("val", "CAMERA25"), "real_test": ("real_test", "REAL275")}
"""Test split → (``results/nocs_results`` / ``gts`` set name, ``segmentation_results`` alias)."""


def stream_seed(seed: int, key: str) -> int:
    """32-bit seed of the random stream of one frame or model: CRC-32 of ``"<seed>:<key>"``."""
    return zlib.crc32(f"{int(seed)}:{key}".encode())


@dataclasses.dataclass(frozen=True)
class FrameTask:
    """One frame to place (and label, for training splits)."""

    split: str
    entry: str
    """List entry, e.g. ``train/00012/0003``."""
    raw_prefix: str
    out_prefix: str
    raw_composed: str | None
    """CAMERA composed depth file in the raw tree (None for REAL)."""
    out_composed: str | None
    resume: bool
    ground_truth: str | None = None
    """Test splits: the frame's NOCS ground-truth pickle, when one exists (→ a DPDN test label)."""


@dataclasses.dataclass(frozen=True)
class FrameOutcome:
    """What happened to one frame."""

    split: str
    entry: str
    status: str
    """``"labelled"``, ``"placed"`` (test frame without label), ``"resumed"`` (done by an earlier run) or
    ``"skipped"``."""
    reason: str | None = None
    """Why a frame was skipped."""
    notes: tuple[str, ...] = ()
    """Instance-level events (skipped instances, ignored mask ids, missing composed depth)."""

    @property
    def usable(self) -> bool:
        return self.status in ("labelled", "placed", "resumed")


@dataclasses.dataclass(frozen=True)
class PrepareSummary:
    """What `prepare` did."""

    out_dir: str
    splits: tuple[str, ...]
    frames: dict[str, int]
    """Split → entries of its ``*_list_all.txt``."""
    usable: dict[str, int]
    """Split → frames labelled (train) or complete (test), resumed ones included."""
    labelled: dict[str, int]
    """Split → frames with a ``_label.pkl`` (test splits: where the NOCS ground truth was found), resumed
    ones included."""
    skipped: dict[str, int]
    """Split → frames skipped."""
    models: int
    """Point models written."""
    seconds: float
    """Wall-clock time of the frame stage."""
    report: str
    """Path of the report file."""

    @property
    def frames_per_second(self) -> float:
        total = sum(self.frames.values())
        return total / self.seconds if self.seconds > 0 else float("inf")


_STATE: dict = {}  # per-process: sizes, intrinsics, seed (set by _init_worker)


def _init_worker(
    sizes: dict[str, ModelSizes],
    intrinsics: dict[str, np.ndarray],
    seed: int,
    extents: dict[str, dict[str, np.ndarray]] | None = None,
) -> None:
    import cv2

    cv2.setNumThreads(1)
    _STATE.update(sizes=sizes, intrinsics=intrinsics, seed=seed, extents=extents or {})


def _frame_done(task: FrameTask, labelled: bool) -> bool:
    if labelled:
        return os.path.exists(task.out_prefix + "_label.pkl")
    return all(os.path.lexists(task.out_prefix + suffix) for suffix in RAW_SUFFIXES)


def _test_label(task: FrameTask, source: str, notes: list[str]) -> FrameOutcome:
    """Label a complete test frame from its ground-truth pickle; without one the frame is only placed."""
    if task.ground_truth is None:
        return FrameOutcome(task.split, task.entry, "placed", None, tuple(notes))
    try:
        ground_truth = encoding.read_pickle(task.ground_truth)
        if not isinstance(ground_truth, dict):
            raise DataFormatError(f"{task.ground_truth}: holds {type(ground_truth).__name__}; expected a dict")
        annotation = annotate_test_frame(
            task.raw_prefix, source, _STATE["sizes"][task.split], ground_truth, _STATE["extents"][task.split]
        )
    except DataFormatError as error:
        return FrameOutcome(task.split, task.entry, "placed", None, (*notes, f"no test label: {error}"))
    notes.extend(annotation.notes)
    if annotation.label is None:
        return FrameOutcome(task.split, task.entry, "placed", None, (*notes, f"no test label: {annotation.reason}"))
    encoding.write_pickle_atomic(task.out_prefix + "_label.pkl", annotation.label)
    return FrameOutcome(task.split, task.entry, "labelled", None, tuple(notes))


def process_frame(task: FrameTask) -> FrameOutcome:
    """Place one frame's files in the prepared tree and label it (training splits).

    Runs in a worker initialized by `_init_worker`. Unreadable or corrupt files skip the frame with
    the file named in the reason.
    """
    source, subset = SPLITS[task.split]
    labelled = subset == "train" or task.ground_truth is not None
    if task.resume and _frame_done(task, labelled):
        return FrameOutcome(task.split, task.entry, "resumed")
    absent = missing_files(task.raw_prefix)
    if len(absent) == len(RAW_SUFFIXES):  # a list entry without any file (CAMERA lists 10 per folder)
        return FrameOutcome(task.split, task.entry, "skipped", f"missing files: {', '.join(absent)}")
    notes = []
    if task.raw_composed is not None:  # before the frame files, whose presence marks a test frame done
        if os.path.exists(task.raw_composed):
            os.makedirs(os.path.dirname(task.out_composed), exist_ok=True)
            place_file(task.raw_composed, task.out_composed)
        else:
            notes.append(f"composed depth {task.raw_composed} missing")
    os.makedirs(os.path.dirname(task.out_prefix), exist_ok=True)
    for suffix in RAW_SUFFIXES:
        if suffix not in absent:
            place_file(task.raw_prefix + suffix, task.out_prefix + suffix)
    if subset != "train":
        if absent:
            return FrameOutcome(task.split, task.entry, "skipped", f"missing files: {', '.join(absent)}", tuple(notes))
        return _test_label(task, source, notes)
    generator = np.random.RandomState(stream_seed(_STATE["seed"], f"{source}/{task.entry}"))
    try:
        annotation = annotate_frame(
            task.raw_prefix, source, _STATE["sizes"][task.split], _STATE["intrinsics"][source], generator
        )
    except DataFormatError as error:
        return FrameOutcome(task.split, task.entry, "skipped", str(error), tuple(notes))
    notes.extend(annotation.notes)
    if annotation.label is None:
        return FrameOutcome(task.split, task.entry, "skipped", annotation.reason, tuple(notes))
    encoding.write_pickle_atomic(task.out_prefix + "_label.pkl", annotation.label)
    return FrameOutcome(task.split, task.entry, "labelled", None, tuple(notes))


@dataclasses.dataclass(frozen=True)
class _ModelTask:
    split: str
    name: str
    path: str
    seed: int


def _build_model(task: _ModelTask):
    source, _ = SPLITS[task.split]
    generator = np.random.RandomState(stream_seed(task.seed, f"model/{task.split}/{task.name}"))
    build = spd_models.camera_model if source == "camera" else spd_models.real_model
    try:
        points, mug = build(task.path, generator)
    except DataFormatError as error:
        return task, None, None, str(error)
    return task, points, mug, None


def _check_arguments(splits, workers) -> tuple[str, ...]:
    splits = tuple(SPLITS) if splits is None else tuple(splits)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise ConfigError(f"unknown split(s) {unknown or list(splits)}; expected a subset of {', '.join(SPLITS)}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer; got {workers!r}")
    return splits


def _prepare_out(out: Path, raw: Path, seed: int, resume: bool) -> None:
    marker = out / MARKER_FILE
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if resume and out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise OutputError(
                f"{out}: --resume needs a folder written by cleanpose data prepare ({MARKER_FILE} missing)"
            )
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous.get("raw") != str(raw.resolve()) or previous.get("seed") != seed:
            raise OutputError(
                f"{out}: was prepared from {previous.get('raw')} with seed {previous.get('seed')}; "
                f"cannot resume with {raw.resolve()} and seed {seed}"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise OutputError(
            f"{out}: folder is not empty; pass --resume to continue an interrupted prepare, or choose an empty folder"
        )
    ensure_writable_folder(out)


def _size_tables(layout: RawLayout, splits: tuple[str, ...]) -> dict[str, ModelSizes]:
    tables = {}
    for split in splits:
        source, subset = SPLITS[split]
        folder = layout.require_models() / (subset if source == "camera" else f"real_{subset}")
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: folder missing; the {split} frames need its models")
        reader = read_camera_sizes if source == "camera" else read_real_sizes
        tables[split] = reader(layout.obj_models, subset)
    return tables


def _ground_truth_file(layout: RawLayout, split: str, entry: str) -> str | None:
    """The NOCS ground-truth pickle of a test frame: ``results/nocs_results`` (where DPDN reads it), the
    ``segmentation_results`` alias, then ``gts/``; None when there is none (or for training splits)."""
    if split not in RESULTS_SETS:
        return None
    set_name, alias = RESULTS_SETS[split]
    _, folder, frame = entry.split("/")
    result_name = f"results_{'val' if split == 'camera_val' else 'test'}_{folder}_{frame}.pkl"
    candidates = (
        layout.root / "results" / "nocs_results" / set_name / result_name,
        layout.root / "segmentation_results" / alias / result_name,
        (layout.gts or layout.root / "gts") / set_name / f"results_{set_name}_{folder}_{frame}.pkl",
    )
    return next((str(path) for path in candidates if path.is_file()), None)


def _frame_tasks(layout: RawLayout, out: Path, split: str, resume: bool) -> tuple[list[str], list[FrameTask]]:
    source, subset = SPLITS[split]
    raw_subset = layout.subset_dir(split)
    composed = None
    if source == "camera":
        if layout.composed is None or not (layout.composed / subset).is_dir():
            raise DataFormatError(
                f"split {split}: composed depth folder missing; expected {layout.root}/camera_full_depths/"
                f"{subset} (the NOCS camera_composed_depth download)"
            )
        composed = layout.composed / subset
    entries = list_entries(raw_subset, split)
    tasks = []
    for entry in entries:
        relative = entry.split("/", 1)[1]
        raw_composed = out_composed = None
        if composed is not None:
            raw_composed = f"{composed}/{relative}_composed.png"
            out_composed = f"{out}/camera_full_depths/{entry}_composed.png"
        tasks.append(
            FrameTask(
                split,
                entry,
                f"{raw_subset}/{relative}",
                f"{out}/{source}/{entry}",
                raw_composed,
                out_composed,
                resume,
                _ground_truth_file(layout, split, entry),
            )
        )
    return entries, tasks


def _run(function, tasks, workers, initargs, description, progress):
    """Yield `function(task)` for every task, in task order, over `workers` processes."""
    with tqdm(total=len(tasks), desc=description, unit="item", disable=not progress) as bar:
        if workers == 1:
            _init_worker(*initargs)
            for task in tasks:
                yield function(task)
                bar.update()
            return
        context = multiprocessing.get_context("spawn")
        chunk = max(1, min(32, len(tasks) // (8 * workers)))
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=initargs
        ) as pool:
            for result in pool.map(function, tasks, chunksize=chunk):
                yield result
                bar.update()


def _write_models(layout: RawLayout, out: Path, splits, seed, workers, resume, progress, report) -> int:
    """Point-model pickles of every split, the raw meshes placed beside them, and ``mug_meta.pkl``."""
    models_dir = layout.require_models()
    out_models = out / "obj_models"
    out_models.mkdir(parents=True, exist_ok=True)
    mug_meta_path = out_models / "mug_meta.pkl"
    mug_meta = encoding.read_pickle(mug_meta_path) if resume and mug_meta_path.exists() else {}
    tasks, written = [], 0
    for split in splits:
        source, subset = SPLITS[split]
        folder = subset if source == "camera" else f"real_{subset}"
        if not (models_dir / folder).is_dir():
            raise DataFormatError(f"{models_dir / folder}: folder missing; split {split} needs its meshes")
        place_tree(models_dir / folder, out_models / folder)
        if resume and (out_models / f"{split}.pkl").exists():
            continue
        paths = (spd_models.camera_model_paths if source == "camera" else spd_models.real_model_paths)(
            models_dir, subset
        )
        tasks.extend(_ModelTask(split, name, str(path), seed) for name, path in paths.items())
    per_split: dict[str, dict] = {split: {} for split in {task.split for task in tasks}}
    for task, points, mug, error in _run(_build_model, tasks, workers, ({}, {}, seed), "models", progress):
        if error is not None:
            report["skipped_models"].append({"split": task.split, "model": task.name, "reason": error})
            continue
        per_split[task.split][task.name] = points
        if mug is not None:
            mug_meta[task.name] = mug
    # mug_meta first: a split whose pickle exists is skipped on resume, so its mugs must already be recorded
    encoding.write_pickle_atomic(mug_meta_path, mug_meta)
    for split, points in per_split.items():
        encoding.write_pickle_atomic(out_models / f"{split}.pkl", points)
        written += len(points)
    return written


def _place_test_pickles(layout: RawLayout, out: Path, splits) -> dict[str, int]:
    """Place ``gts/<set>`` and the segmentation results of the test splits; returns files per folder."""
    placed = {}
    for split in splits:
        if split not in RESULTS_SETS:
            continue
        set_name, alias = RESULTS_SETS[split]
        if layout.gts is not None and (layout.gts / set_name).is_dir():
            placed[f"gts/{set_name}"] = place_tree(layout.gts / set_name, out / "gts" / set_name)
        results = out / "results" / "nocs_results" / set_name
        for candidate in (
            layout.root / "results" / "nocs_results" / set_name,
            layout.root / "segmentation_results" / alias,
        ):
            if candidate.is_dir():
                placed[f"results/nocs_results/{set_name}"] = place_tree(candidate, results)
                break
    return placed


def prepare(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: tuple[str, ...] | None = None,
    workers: int = 1,
    resume: bool = False,
    seed: int = 0,
    intrinsics: dict[str, np.ndarray] | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Turn the NOCS downloads into the preprocessed layout the readers take.

    Args:
        raw_dir: folder holding the unpacked downloads (see `cleanpose.data.prepare.layout`).
        out_dir: prepared dataset root (the reference ``data/`` folder); must be empty unless `resume`.
        splits: subset of ("camera_train", "camera_val", "real_train", "real_test"); default all.
        workers: processes (1 = in this process). Workers start with "spawn": scripts calling this
            with workers > 1 need the ``if __name__ == "__main__":`` guard.
        resume: continue an interrupted run in `out_dir` (same raw folder and seed): frames already
            labelled / placed and model pickles already written are kept.
        seed: seeds the per-frame RANSAC and per-model sampling streams (`stream_seed`).
        intrinsics: ``{"camera": K, "real": K}`` (3, 3) pixels; default the NOCS intrinsics (§1.8).
        progress: tqdm progress bars.

    Returns:
        `PrepareSummary`.

    Raises:
        ConfigError: bad arguments. DataFormatError: a missing raw folder. OutputError: a non-empty `out_dir`
            without `resume`.
        DataFormatError: an unreadable size file in ``obj_models``.
    """
    splits = _check_arguments(splits, workers)
    intrinsics = {"camera": CAMERA_INTRINSICS, "real": REAL_INTRINSICS, **(intrinsics or {})}
    raw, out = Path(raw_dir), Path(out_dir)
    layout = RawLayout.find(raw)
    for split in splits:
        layout.subset_dir(split)
    sizes = _size_tables(layout, splits)
    _prepare_out(out, raw, int(seed), resume)
    settings = {"raw": str(raw.resolve()), "seed": int(seed), "splits": list(splits)}
    encoding.write_text_atomic(out / MARKER_FILE, json.dumps({"complete": False, **settings}, indent=1) + "\n")
    report: dict = {"settings": settings, "skipped_models": []}

    models = _write_models(layout, out, splits, int(seed), workers, resume, progress, report)
    entries, tasks = {}, []
    for split in splits:
        entries[split], split_tasks = _frame_tasks(layout, out, split, resume)
        source, subset = SPLITS[split]
        (out / source).mkdir(parents=True, exist_ok=True)
        encoding.write_text_atomic(out / source / f"{subset}_list_all.txt", "".join(f"{e}\n" for e in entries[split]))
        tasks.extend(split_tasks)
    extents = {
        split: {
            name: 2 * np.amax(np.abs(points), axis=0)
            for name, points in encoding.read_pickle(out / "obj_models" / f"{split}.pkl").items()
        }
        for split in splits
        if split in RESULTS_SETS
    }
    start = time.perf_counter()
    outcomes = list(_run(process_frame, tasks, workers, (sizes, intrinsics, int(seed), extents), "prepare", progress))
    seconds = time.perf_counter() - start
    for split in splits:
        source, subset = SPLITS[split]
        kept = [o.entry for o in outcomes if o.split == split and _has_label(out, o)]
        if subset == "train" or kept:
            encoding.write_text_atomic(out / source / f"{subset}_list.txt", "".join(f"{e}\n" for e in kept))
    report["test_pickles"] = _place_test_pickles(layout, out, splits)
    summary = _write_report(out, splits, entries, outcomes, models, seconds, report)
    encoding.write_text_atomic(out / MARKER_FILE, json.dumps({"complete": True, **settings}, indent=1) + "\n")
    return summary


def _write_report(out, splits, entries, outcomes, models, seconds, report) -> PrepareSummary:
    per_split = {}
    for split in splits:
        mine = [o for o in outcomes if o.split == split]
        per_split[split] = {
            "frames": len(entries[split]),
            "status": dict(collections.Counter(o.status for o in mine)),
            "skip_reasons": dict(collections.Counter(_reason_kind(o.reason) for o in mine if o.reason)),
            "notes": dict(collections.Counter(_reason_kind(n) for o in mine for n in o.notes)),
        }
    report.update(
        splits=per_split,
        models_written=models,
        seconds=seconds,
        skipped_frames=[{"split": o.split, "frame": o.entry, "reason": o.reason} for o in outcomes if o.reason],
        frame_notes=[{"split": o.split, "frame": o.entry, "notes": list(o.notes)} for o in outcomes if o.notes],
    )
    path = out / REPORT_FILE
    encoding.write_text_atomic(path, json.dumps(report, indent=1) + "\n")
    usable = {split: sum(o.usable for o in outcomes if o.split == split) for split in splits}
    labelled = {split: sum(_has_label(out, o) for o in outcomes if o.split == split) for split in splits}
    skipped = {split: sum(o.status == "skipped" for o in outcomes if o.split == split) for split in splits}
    for split in splits:
        logger.info(
            "%s: %d frames listed, %d usable, %d skipped", split, len(entries[split]), usable[split], skipped[split]
        )
    return PrepareSummary(
        str(out),
        tuple(splits),
        {s: len(entries[s]) for s in splits},
        usable,
        labelled,
        skipped,
        models,
        seconds,
        str(path),
    )


def _has_label(out: Path, outcome: FrameOutcome) -> bool:
    """Labelled now, or (resumed) by an earlier run."""
    if outcome.status == "resumed":
        return (out / SPLITS[outcome.split][0] / f"{outcome.entry}_label.pkl").exists()
    return outcome.status == "labelled"


def _reason_kind(reason: str) -> str:
    """Group a reason line by its wording without numbers and names (``instance 3: 12 pixels …`` →
    ``instance N: N pixels …``), for the counts of the report."""
    words = []
    for word in reason.split():
        words.append("N" if any(char.isdigit() for char in word) or "/" in word else word)
    return " ".join(words)
