"""`generate`: write a whole synthetic dataset in the NOCS or HouseCat6D layout.

Work is split into one task per (split, scene). Each task rebuilds the (deterministic) instance
library, samples its scene from a generator keyed by (seed, split, scene) and renders and writes its
frames, so the same arguments give byte-identical files whatever the number of worker processes.
Files go to disk frame by frame (bounded memory); list files, the summary and the completion marker
are written once every scene is done.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cleanpose.data.formats import encoding
from cleanpose.data.synth import writer_housecat6d, writer_nocs, writer_raw
from cleanpose.data.synth.backgrounds import BackgroundSet, draw_backdrop
from cleanpose.data.synth.scene import SPLIT_CODES, build_distractors, build_library, render_frame, sample_scene
from cleanpose.data.synth.sensor import SensorNoise
from cleanpose.data.synth.user_library import MeshSettings, build_mixed_library, mixed_mean_shapes
from cleanpose.errors import ConfigError, OutputError
from cleanpose.fileio import ensure_writable_folder

logger = logging.getLogger(__name__)

FORMATS = ("nocs", "housecat6d")

MARKER_FILE = "cleanpose_synth.json"
"""Written at the start (``complete: false``) and rewritten at the end; `--overwrite` only deletes
folders that carry it."""

DEFAULT_INSTANCES = {"camera_train": 6, "camera_val": 3, "real_train": 3, "real_test": 3, "train": 4, "test": 2}
"""Instances per category of each split's library."""


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote."""

    out_dir: str
    format: str
    splits: tuple[str, ...]
    seed: int
    image_size: tuple[int, int]
    """(W, H) pixels."""
    scenes: int
    """Scenes written (all splits)."""
    frames: int
    """Frames written (all splits)."""
    labelled_frames: int
    """NOCS training frames that passed the preprocessing filters (in ``train_list.txt``); for
    HouseCat6D every frame has a label."""
    instances: int
    """Visible object instances summed over frames."""
    models: int
    """Object models written."""
    seconds: float
    """Wall-clock time."""

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def scaled_intrinsics(intrinsics: np.ndarray, native_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of the same camera rendering at another resolution (pixel centres kept aligned).

    Args:
        intrinsics: (3, 3) float, pixels at `native_size`.
        native_size: (W, H) the intrinsics refer to.
        image_size: (W, H) wanted.

    Returns:
        (3, 3) float64.
    """
    ratio_x, ratio_y = image_size[0] / native_size[0], image_size[1] / native_size[1]
    scaled = np.array(intrinsics, dtype=np.float64)
    scaled[0, 0] *= ratio_x
    scaled[1, 1] *= ratio_y
    scaled[0, 2] = (scaled[0, 2] + 0.5) * ratio_x - 0.5
    scaled[1, 2] = (scaled[1, 2] + 0.5) * ratio_y - 0.5
    return scaled


@dataclasses.dataclass(frozen=True)
class _Task:
    root: str
    format: str
    split: str
    scene_index: int
    frames: int
    seed: int
    image_size: tuple[int, int]
    noise: SensorNoise
    instances_per_category: int
    objects_range: tuple[int, int]
    meshes: MeshSettings | None = None
    backgrounds: BackgroundSet | None = None
    raw: bool = False


def split_intrinsics(format: str, split: str, image_size: tuple[int, int], seed: int, scene_index: int) -> np.ndarray:
    """Intrinsics of a scene: CAMERA or REAL275 (NOCS), per-scene jittered (HouseCat6D); scaled to `image_size`."""
    if format == "housecat6d":
        generator = np.random.default_rng([seed, SPLIT_CODES[split], scene_index, 3])
        return writer_housecat6d.scene_intrinsics(generator, image_size)
    native = writer_nocs.CAMERA_INTRINSICS if split.startswith("camera") else writer_nocs.REAL_INTRINSICS
    return scaled_intrinsics(native, writer_nocs.NOCS_IMAGE_SIZE, image_size)


@functools.lru_cache(maxsize=16)
def _library(format: str, split: str, seed: int, per_category: int, meshes: MeshSettings | None = None):
    if meshes is not None:
        return build_mixed_library(format, split, seed, per_category, meshes)
    return build_library(format, split, seed, per_category)


def scene_frames(
    format: str,
    split: str,
    scene_index: int,
    frames: int,
    seed: int,
    image_size: tuple[int, int],
    noise: SensorNoise,
    instances_per_category: int,
    objects_range: tuple[int, int] = (2, 6),
    meshes: MeshSettings | None = None,
    backgrounds: BackgroundSet | None = None,
):
    """Sample one scene and yield its rendered frames (what `generate` writes for that scene).

    Args:
        format: "nocs" or "housecat6d".
        split: a split of that format.
        scene_index: 0-based scene.
        frames: frames of the scene.
        seed: dataset seed.
        image_size: (W, H) pixels.
        noise: depth sensor model.
        instances_per_category: library size per category.
        objects_range: inclusive (min, max) objects per scene.
        meshes: the user's meshes (``--models``); None: procedural shapes only.
        backgrounds: photos composited behind the scene (``--backgrounds``), one drawn per frame.

    Yields:
        (scene, intrinsics, frame index, `FrameArrays`) per frame.
    """
    library = _library(format, split, seed, instances_per_category, meshes)
    intrinsics = split_intrinsics(format, split, image_size, seed, scene_index)
    code = SPLIT_CODES[split]
    distractors = build_distractors(split, seed) if format == "nocs" else ()
    scene = sample_scene(
        library,
        np.random.default_rng([seed, code, scene_index, 0]),
        frames,
        intrinsics,
        image_size,
        objects_range,
        distractors,
        category_offset=scene_index * objects_range[0],
    )
    for frame in range(frames):
        backdrop = None
        if backgrounds is not None:
            backdrop = draw_backdrop(
                backgrounds, image_size, np.random.default_rng([seed, code, scene_index, 4, frame])
            )
        arrays = render_frame(
            scene,
            frame,
            intrinsics,
            image_size,
            noise,
            np.random.default_rng([seed, code, scene_index, 1, frame]),
            backdrop=backdrop,
        )
        yield scene, intrinsics, frame, arrays


def _run_task(task: _Task) -> list:
    root = Path(task.root)
    records = []
    code = SPLIT_CODES[task.split]
    for scene, intrinsics, frame, arrays in scene_frames(
        task.format,
        task.split,
        task.scene_index,
        task.frames,
        task.seed,
        task.image_size,
        task.noise,
        task.instances_per_category,
        task.objects_range,
        task.meshes,
        task.backgrounds,
    ):
        if task.raw:
            records.append(writer_raw.write_frame(root, task.split, task.scene_index, frame, scene, arrays))
        elif task.format == "nocs":
            detector = np.random.default_rng([task.seed, code, task.scene_index, 2, frame])
            records.append(writer_nocs.write_frame(root, task.split, task.scene_index, frame, scene, arrays, detector))
        else:
            if frame == 0:
                writer_housecat6d.write_scene_files(root, task.split, task.scene_index, scene, intrinsics)
            records.append(writer_housecat6d.write_frame(root, task.split, task.scene_index, frame, scene, arrays))
    return records


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def _check_arguments(
    format, scenes, frames_per_scene, seed, workers, splits, image_size, objects_range
) -> tuple[str, ...]:
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}")
    for name, value in (("scenes", scenes), ("frames_per_scene", frames_per_scene), ("workers", workers)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
    known = writer_nocs.NOCS_SPLITS if format == "nocs" else writer_housecat6d.HOUSECAT6D_SPLITS
    splits = tuple(known if splits is None else splits)
    unknown = [split for split in splits if split not in known]
    if unknown or not splits:
        raise ConfigError(f"unknown split(s) {unknown or splits!r} for format {format}; expected a subset of {known}")
    width, height = image_size
    low, high = objects_range
    if not 1 <= low <= high <= 12:
        raise ConfigError(f"objects_range must satisfy 1 <= min <= max <= 12; got {objects_range}")
    if width < 16 or height < 16:
        raise ConfigError(f"image_size must be at least 16x16 pixels; got {width}x{height}")
    return splits


def _prepare_folder(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputError(
                f"{out_dir}: folder is not empty; pass --overwrite (overwrite=True) to replace a "
                "previous synthetic dataset, or choose another folder"
            )
        if not (out_dir / MARKER_FILE).is_file():
            raise OutputError(
                f"{out_dir}: folder is not empty and holds no {MARKER_FILE}; refusing to delete "
                "something cleanpose synth did not write"
            )
        for child in out_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    ensure_writable_folder(out_dir)


def generate(
    out_dir,
    format: str = "nocs",
    scenes: int = 1,
    frames_per_scene: int = 1,
    seed: int = 0,
    workers: int = 1,
    image_size: tuple[int, int] | None = None,
    splits: tuple[str, ...] | None = None,
    noise: SensorNoise | None = None,
    overwrite: bool = False,
    instances_per_category: int | None = None,
    objects_range: tuple[int, int] = (2, 6),
    progress: bool = True,
    meshes: MeshSettings | None = None,
    backgrounds: BackgroundSet | None = None,
    raw: bool = False,
) -> SynthSummary:
    """Write a synthetic dataset.

    Args:
        out_dir: dataset root to create (the reference ``data/`` folder for NOCS, the ``housecat6d/``
            folder for HouseCat6D). Must be missing or empty unless `overwrite`.
        format: "nocs" or "housecat6d".
        scenes: scenes per split (CAMERA folders, REAL ``scene_<k>``, HouseCat6D ``scene<NN>`` /
            ``test_scene<k>``).
        frames_per_scene: frames rendered per scene.
        seed: dataset seed; the same arguments give byte-identical files.
        workers: worker processes (1 = render in this process). Workers are started with the
            "spawn" method, so a script that calls this with workers > 1 needs the usual
            ``if __name__ == "__main__":`` guard.
        image_size: (W, H); default 640×480 (NOCS) or 1096×852 (HouseCat6D). Other sizes scale the
            intrinsics (used by tests; readers with fixed NOCS intrinsics expect the default).
        splits: subset of ("camera_train", "camera_val", "real_train", "real_test") or
            ("train", "test"); default all.
        noise: depth sensor model; default `SensorNoise()`; ``SensorNoise(enabled=False)`` is noise-free.
        overwrite: replace a previous synthetic dataset in `out_dir` (one that carries the marker file).
        instances_per_category: object models per category and split; default `DEFAULT_INSTANCES`.
        objects_range: inclusive (min, max) number of objects per scene (fewer when the table is too full).
        progress: show a tqdm progress bar.
        meshes: render the user's meshes (`user_library.mesh_settings`, ``--models``), mixed with
            procedural shapes as it says; `instances_per_category` then only sizes procedural-only categories.
        backgrounds: photos composited behind the scenes (`backgrounds.scan_backgrounds`, ``--backgrounds``).
        raw: NOCS only: write the raw layout of the NOCS downloads instead (`writer_raw`: no labels,
            lists or point models), the input of ``cleanpose data prepare``.

    Returns:
        `SynthSummary`.

    Raises:
        ConfigError: bad arguments.
        OutputError: a non-empty folder without `overwrite`, an unwritable folder.
    """
    start = time.perf_counter()
    if image_size is None:
        image_size = writer_nocs.NOCS_IMAGE_SIZE if format == "nocs" else writer_housecat6d.HOUSECAT6D_IMAGE_SIZE
    image_size = (int(image_size[0]), int(image_size[1]))
    objects_range = (int(objects_range[0]), int(objects_range[1]))
    splits = _check_arguments(format, scenes, frames_per_scene, seed, workers, splits, image_size, objects_range)
    if raw and format != "nocs":
        raise ConfigError(f"raw output exists for the nocs format only; got format {format!r}")
    noise = SensorNoise() if noise is None else noise
    root = Path(out_dir)
    _prepare_folder(root, overwrite)
    settings = {
        "format": format,
        "scenes": int(scenes),
        "frames_per_scene": int(frames_per_scene),
        "seed": int(seed),
        "image_size": list(image_size),
        "splits": list(splits),
        "noise": dataclasses.asdict(noise),
        "instances_per_category": instances_per_category,
        "objects_range": list(objects_range),
        "raw": raw,
    }
    if meshes is not None:
        settings["imported_meshes"] = {
            "folder": meshes.catalog.root,
            "meshes": len(meshes.catalog.entries),
            "skipped": list(meshes.catalog.skipped),
            "test_fraction": meshes.test_fraction,
            "procedural_fraction": meshes.procedural_fraction,
        }
    if backgrounds is not None:
        settings["backgrounds"] = {"photos": len(backgrounds.paths), "skipped": list(backgrounds.skipped)}
    encoding.write_text_atomic(root / MARKER_FILE, json.dumps({"complete": False, **settings}, indent=1) + "\n")

    models = 0
    mug_meta: dict = {}
    for split in splits:
        per_category = instances_per_category or DEFAULT_INSTANCES[split]
        library = _library(format, split, seed, per_category, meshes)
        if raw:
            models += writer_raw.write_models(root, split, library)
        elif format == "nocs":
            models += writer_nocs.write_models(root, split, library, seed, mug_meta)
        else:
            models += writer_housecat6d.write_models(root, library)
    if format == "nocs" and not raw:
        encoding.write_pickle_atomic(root / "obj_models" / "mug_meta.pkl", mug_meta)
        training = [
            _library(format, split, seed, instances_per_category or DEFAULT_INSTANCES[split], meshes)
            for split in ("camera_train", "real_train")
        ]
        priors = None if meshes is None else mixed_mean_shapes(training, seed)
        writer_nocs.write_mean_shapes(root, training, seed, priors)

    tasks = [
        _Task(
            str(root),
            format,
            split,
            scene,
            int(frames_per_scene),
            int(seed),
            image_size,
            noise,
            instances_per_category or DEFAULT_INSTANCES[split],
            objects_range,
            meshes,
            backgrounds,
            raw,
        )
        for split in splits
        for scene in range(scenes)
    ]
    records = []
    with tqdm(total=len(tasks) * frames_per_scene, desc=f"synth {format}", unit="frame", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                records.extend(_run_task(task))
                bar.update(task.frames)
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
                for task, task_records in zip(tasks, pool.map(_run_task, tasks)):
                    records.extend(task_records)
                    bar.update(task.frames)
    if format == "nocs" and not raw:
        writer_nocs.write_lists(root, records, splits)
        writer_nocs.link_results_folders(root, splits)
    labelled = sum(getattr(record, "labelled", True) for record in records)
    summary = SynthSummary(
        str(root),
        format,
        splits,
        int(seed),
        image_size,
        len(tasks),
        len(records),
        labelled,
        sum(record.instances for record in records),
        models,
        time.perf_counter() - start,
    )
    encoding.write_text_atomic(
        root / MARKER_FILE,
        json.dumps(
            {
                "complete": True,
                **settings,
                "frames": summary.frames,
                "labelled_frames": labelled,
                "instances": summary.instances,
                "models": models,
            },
            indent=1,
        )
        + "\n",
    )
    logger.info(
        "wrote %d frames (%d labelled) of %d scenes to %s in %.1f s",
        summary.frames,
        labelled,
        summary.scenes,
        root,
        summary.seconds,
    )
    return summary
