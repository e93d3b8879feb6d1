"""Write rendered frames and object models in the NOCS layout after DPDN preprocessing.

Layout under the dataset root (the reference ``data/`` folder), docs/data_formats.md §1–§2:

* ``camera/{train,val}/<FFFFF>/<IIII>_{color,depth,mask,coord}.png``, ``_meta.txt``, train ``_label.pkl``;
  CAMERA ``_depth.png`` holds the clean objects-only depth in the 3-channel encoding (32001 elsewhere),
  ``camera_full_depths/{train,val}/<FFFFF>/<IIII>_composed.png`` the full noisy sensor depth (16-bit).
* ``real/{train,test}/scene_<k>/<IIII>_…`` with a 16-bit noisy sensor ``_depth.png``.
* list files ``camera/{train_list_all,train_list,val_list_all}.txt``,
  ``real/{train_list_all,train_list,test_list_all}.txt``.
* ``gts/{val,real_test}/results_*.pkl`` and ``results/nocs_results/{val,real_test}/results_*.pkl``
  (segmentation results with simulated detector errors, §2.8) for the test splits; the README's
  ``segmentation_results/{CAMERA25,REAL275}`` are symbolic links to the latter (same files, §2.1).
* ``obj_models/``: raw meshes (CAMERA ``<train|val>/<synset>/<id>/model.obj`` + ``bbox.txt``, stored
  z-flipped as the ShapeNet files are; REAL ``real_<train|test>/<name>.obj`` + ``<name>.txt``, metric),
  and the SPD point-cloud pickles ``camera_train.pkl`` … plus ``mug_meta.pkl``.
* ``mean_shapes.npy``: the (6, 1024, 3) category priors DPDN loads from the dataset root (§2.9).

Within a frame the files are written in an order that leaves no frame a reader would accept
half-written: images first, then ``_meta.txt`` (the last file DPDN's preprocessing requires), then
``_color.png`` (which the REAL list builder globs), then ``_label.pkl``; segmentation/gt pickles of
test frames come after all image files. List files are written once every frame exists.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import trimesh

from cleanpose.data.formats import encoding
from cleanpose.data.prepare.models import farthest_point_indices, mug_fix
from cleanpose.data.synth.scene import FrameArrays, Instance, SceneSpec, instance_mesh, instance_shape
from cleanpose.data.synth.sensor import to_millimetres
from cleanpose.data.synth.shapes import NOCS_CATEGORIES
from cleanpose.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

CAMERA_INTRINSICS = np.array([[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]])
"""CAMERA (synthetic split) intrinsics, docs/data_formats.md §1.8."""

REAL_INTRINSICS = np.array([[591.0125, 0.0, 322.525], [0.0, 590.16775, 244.11084], [0.0, 0.0, 1.0]])
"""REAL275 intrinsics, docs/data_formats.md §1.8."""

NOCS_IMAGE_SIZE = (640, 480)
"""(W, H) of every NOCS image."""

NOCS_SPLITS = ("camera_train", "camera_val", "real_train", "real_test")

MIN_VALID_PIXELS = 64
"""Instances with fewer mask pixels of valid depth get no label (DPDN, §2.3 step 8)."""

MAX_BOX_WIDTH, MAX_BOX_HEIGHT = 600, 440
"""A box wider or taller than this discards the whole frame (DPDN, §2.3 step 7)."""

HANDLE_VISIBLE_PIXELS = 10
"""A mug handle counts as visible when at least this many of its pixels are seen."""

MODEL_POINTS = 1024
"""Points per model in the SPD pickles (sampled 3 × 1024 by area, then farthest-point sampled)."""

MEAN_SHAPES_FILE = "mean_shapes.npy"
"""Category priors in the dataset root (DPDN's location, docs/data_formats.md §2.9)."""

RESULTS_LINKS = {"val": "CAMERA25", "real_test": "REAL275"}
"""``results/nocs_results/<set>`` → name of its ``segmentation_results/`` alias (README layout, §2.1)."""

# Paths of one split: (top folder, sub folder, scene folder pattern)
_SPLIT_FOLDERS = {
    "camera_train": ("camera", "train", "{:05d}"),
    "camera_val": ("camera", "val", "{:05d}"),
    "real_train": ("real", "train", "scene_{}"),
    "real_test": ("real", "test", "scene_{}"),
}


@dataclasses.dataclass(frozen=True)
class FrameRecord:
    """What one written frame contributes to the list files and the summary."""

    split: str
    entry: str
    """List-file entry, e.g. ``train/00012/0003`` or ``test/scene_1/0000``."""
    labelled: bool
    """True when a ``_label.pkl`` was written (frame passed the §2.3 filters)."""
    instances: int
    """Instances visible in the frame (lines of ``_meta.txt``)."""


def scene_folder(split: str, scene_index: int) -> str:
    """Folder name of a scene: CAMERA ``%05d`` from 0, REAL ``scene_<k>`` from 1."""
    pattern = _SPLIT_FOLDERS[split][2]
    return pattern.format(scene_index if split.startswith("camera") else scene_index + 1)


def frame_entry(split: str, scene_index: int, frame_index: int) -> str:
    """List-file entry of a frame (relative to ``camera/`` or ``real/``)."""
    return f"{_SPLIT_FOLDERS[split][1]}/{scene_folder(split, scene_index)}/{frame_index:04d}"


def mask_bbox(mask: np.ndarray) -> np.ndarray:
    """Tight box ``[y1, x1, y2, x2]`` (y2, x2 exclusive) of a non-empty (H, W) bool mask, int32."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    return np.array([rows[0], columns[0], rows[-1] + 1, columns[-1] + 1], dtype=np.int32)


def normalized_extents(instance: Instance) -> np.ndarray:
    """(3,) float64 tight-box extents of the normalized mesh (unit diagonal)."""
    lower, upper = instance_shape(instance).mesh.bounds
    return upper - lower


def visible_objects(arrays: FrameArrays) -> list[int]:
    """Scene object indices seen in the frame, in scene order (→ instance ids 1, 2, …)."""
    counts = np.bincount(arrays.object_index[arrays.object_index >= 0].ravel(), minlength=len(arrays.scales))
    return [k for k in range(len(arrays.scales)) if counts[k] > 0]


def handle_visibility(scene: SceneSpec, arrays: FrameArrays, objects: list[int]) -> np.ndarray:
    """(N,) int64: 0 for a mug/cup whose handle is not seen, else 1."""
    return np.array(
        [
            0
            if scene.objects[k].instance.category in ("mug", "cup") and arrays.handle_pixels[k] < HANDLE_VISIBLE_PIXELS
            else 1
            for k in objects
        ],
        dtype=np.int64,
    )


def simulate_detections(
    instance_map: np.ndarray,
    instance_ids: list[int],
    class_ids: list[int],
    num_classes: int,
    generator: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Mask R-CNN-like detections derived from ground truth with realistic errors.

    Per ground-truth instance: missed with probability 0.05 (0.5 below 50 pixels); otherwise its mask
    is eroded or dilated by 0–3 pixels, its class swapped with probability 0.03, and it gets a score in
    [0.55, 1.0]. Plus Poisson(0.3) false positives (elliptic blobs, scores in [0.05, 0.6]).
    Detections are sorted by decreasing score.

    Args:
        instance_map: (H, W) uint8 instance ids.
        instance_ids: ids of the ground-truth instances.
        class_ids: 1-based class of each ground-truth instance.
        num_classes: number of categories.
        generator: source of every draw.

    Returns:
        ``pred_class_ids`` (M,) int32, ``pred_bboxes`` (M, 4) int32, ``pred_scores`` (M,) float32,
        ``pred_masks`` (H, W, M) bool.
    """
    height, width = instance_map.shape
    masks, classes, scores = [], [], []
    for instance_id, class_id in zip(instance_ids, class_ids):
        mask = instance_map == instance_id
        pixels = int(mask.sum())
        draws = generator.random(4)
        if draws[0] < (0.5 if pixels < 50 else 0.05):
            continue
        radius = int(generator.integers(0, 4))
        if radius:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            operation = cv2.dilate if draws[1] < 0.5 else cv2.erode
            mask = operation(mask.astype(np.uint8), kernel).astype(bool)
        if not mask.any():
            continue
        if draws[2] < 0.03:  # confuse the class with another one
            class_id = (class_id - 1 + int(generator.integers(1, num_classes))) % num_classes + 1
        masks.append(mask)
        classes.append(class_id)
        scores.append(0.55 + 0.45 * draws[3])
    for _ in range(int(generator.poisson(0.3))):
        centre = (int(generator.integers(0, width)), int(generator.integers(0, height)))
        axes = (int(generator.integers(6, max(7, width // 10))), int(generator.integers(6, max(7, height // 10))))
        blob = np.zeros((height, width), np.uint8)
        cv2.ellipse(blob, centre, axes, float(generator.uniform(0, 180)), 0, 360, 1, -1)
        masks.append(blob.astype(bool))
        classes.append(int(generator.integers(1, num_classes + 1)))
        scores.append(float(generator.uniform(0.05, 0.6)))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    stack = np.stack([masks[i] for i in order], axis=2) if masks else np.zeros((height, width, 0), bool)
    return {
        "pred_class_ids": np.array([classes[i] for i in order], dtype=np.int32),
        "pred_bboxes": np.array([mask_bbox(masks[i]) for i in order], dtype=np.int32).reshape(-1, 4),
        "pred_scores": np.array([scores[i] for i in order], dtype=np.float32),
        "pred_masks": stack,
    }


def write_frame(
    root: Path,
    split: str,
    scene_index: int,
    frame_index: int,
    scene: SceneSpec,
    arrays: FrameArrays,
    detector_generator: np.random.Generator,
) -> FrameRecord:
    """Write every file of one NOCS frame.

    Args:
        root: dataset root (the reference ``data/`` folder).
        split: one of `NOCS_SPLITS`.
        scene_index: 0-based scene (CAMERA folder id; REAL scene k = index + 1).
        frame_index: 0-based frame within the scene.
        scene: the rendered scene.
        arrays: the rendered frame.
        detector_generator: draws of the simulated detector (test splits only).

    Returns:
        `FrameRecord` of the frame.
    """
    top, sub, _ = _SPLIT_FOLDERS[split]
    prefix = root / top / sub / scene_folder(split, scene_index) / f"{frame_index:04d}"
    objects, instance_map, label_depth_mm = write_image_files(root, split, prefix, scene, arrays)

    entry = frame_entry(split, scene_index, frame_index)
    labelled = False
    if sub == "train":
        label = frame_label(scene, arrays, objects, instance_map, label_depth_mm)
        if label is not None:
            encoding.write_pickle_atomic(f"{prefix}_label.pkl", label)
            labelled = True
    else:
        write_test_pickles(root, split, entry, scene, arrays, objects, instance_map, detector_generator)
    return FrameRecord(split, entry, labelled, len(objects))


def write_image_files(root: Path, split: str, prefix: Path, scene: SceneSpec, arrays: FrameArrays):
    """Write the raw files of a frame: ``<prefix>_{depth,mask,coord}.png``, ``_meta.txt``, ``_color.png``
    (in that order) and, for CAMERA, ``camera_full_depths/<sub>/<FFFFF>/<IIII>_composed.png`` under `root`.

    Returns:
        (visible scene object indices in instance-id order, (H, W) uint8 instance map,
        (H, W) millimetre depth the preprocessing reads: CAMERA objects-only, REAL sensor).
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
    is_camera = split.startswith("camera")
    objects = visible_objects(arrays)
    height, width = arrays.object_index.shape
    instance_map = np.full((height, width), encoding.MASK_BACKGROUND_NOCS, dtype=np.uint8)
    for instance_id, k in enumerate(objects, start=1):
        instance_map[arrays.object_index == k] = instance_id
    object_pixels = arrays.object_index >= 0

    if is_camera:
        objects_depth_mm = to_millimetres(np.where(object_pixels, arrays.depth, 0.0))
        encoding.write_depth(f"{prefix}_depth.png", objects_depth_mm, three_channel=True)
        composed_folder = root / "camera_full_depths" / _SPLIT_FOLDERS[split][1] / prefix.parent.name
        composed_folder.mkdir(parents=True, exist_ok=True)
        encoding.write_depth(composed_folder / f"{prefix.name}_composed.png", to_millimetres(arrays.sensor_depth))
        label_depth_mm = objects_depth_mm
    else:
        label_depth_mm = to_millimetres(arrays.sensor_depth)
        encoding.write_depth(f"{prefix}_depth.png", label_depth_mm)
    encoding.write_mask(f"{prefix}_mask.png", instance_map)
    encoding.write_coord(f"{prefix}_coord.png", arrays.nocs, object_pixels)
    rows = []
    for instance_id, k in enumerate(objects, start=1):
        instance = scene.objects[k].instance
        rows.append(encoding.MetaRow(instance_id, instance.class_id, instance.name, instance.synset))
    encoding.write_meta(f"{prefix}_meta.txt", rows)
    encoding.write_color(f"{prefix}_color.png", arrays.color)
    return objects, instance_map, label_depth_mm


def frame_label(
    scene: SceneSpec, arrays: FrameArrays, objects: list[int], instance_map: np.ndarray, depth_mm: np.ndarray
) -> dict | None:
    """The ``_label.pkl`` content of a training frame, or None when DPDN would discard the frame.

    Applies §2.3: instances in meta order, class-0 distractors skipped; box from the full mask;
    a box wider than 600 or taller than 440 pixels discards the frame; fewer than 64 mask pixels with
    depth > 0 (of the depth the preprocessing reads) skips the instance; no surviving instance discards
    the frame. Poses are the exact rendering poses (the reference estimates them from the NOCS map by
    RANSAC-Umeyama/PnP).
    """
    kept: dict[str, list] = {
        key: []
        for key in ("class_ids", "instance_ids", "model_list", "bboxes", "scales", "sizes", "rotations", "translations")
    }
    for instance_id, k in enumerate(objects, start=1):
        instance = scene.objects[k].instance
        if instance.class_id == 0:  # distractor
            continue
        mask = instance_map == instance_id
        box = mask_bbox(mask)
        if box[3] - box[1] > MAX_BOX_WIDTH or box[2] - box[0] > MAX_BOX_HEIGHT:
            return None
        if int((mask & (depth_mm > 0)).sum()) < MIN_VALID_PIXELS:
            continue
        kept["class_ids"].append(instance.class_id)
        kept["instance_ids"].append(instance_id)
        kept["model_list"].append(instance.name)
        kept["bboxes"].append(box)
        kept["scales"].append(arrays.scales[k])
        kept["sizes"].append(normalized_extents(instance))
        kept["rotations"].append(arrays.rotations[k])
        kept["translations"].append(arrays.translations[k])
    if not kept["class_ids"]:
        return None
    return {
        "class_ids": kept["class_ids"],
        "instance_ids": kept["instance_ids"],
        "model_list": kept["model_list"],
        "bboxes": np.array(kept["bboxes"], dtype=np.int32),
        "scales": np.array(kept["scales"], dtype=np.float32),
        "sizes": np.array(kept["sizes"], dtype=np.float32),
        "rotations": np.array(kept["rotations"], dtype=np.float32),
        "translations": np.array(kept["translations"], dtype=np.float32),
    }


def ground_truth(
    scene: SceneSpec, arrays: FrameArrays, objects: list[int], instance_ids: list[int], instance_map: np.ndarray
) -> dict:
    """The ``gt_*`` keys of a test frame.

    Args:
        scene: the scene.
        arrays: the rendered frame.
        objects: scene object index of each ground-truth instance (visible, class > 0, meta order).
        instance_ids: their ids in `instance_map`.
        instance_map: (H, W) uint8 instance ids.
    """
    gt_rts = np.zeros((len(objects), 4, 4))
    for row, k in enumerate(objects):
        gt_rts[row, :3, :3] = arrays.scales[k] * arrays.rotations[k]
        gt_rts[row, :3, 3] = arrays.translations[k]
        gt_rts[row, 3, 3] = 1.0
    return {
        "gt_class_ids": np.array([scene.objects[k].instance.class_id for k in objects], dtype=np.int32),
        "gt_bboxes": np.array([mask_bbox(instance_map == i) for i in instance_ids], dtype=np.int32).reshape(-1, 4),
        "gt_RTs": gt_rts,
        "gt_scales": np.array(
            [normalized_extents(scene.objects[k].instance) for k in objects], dtype=np.float32
        ).reshape(-1, 3),
        "gt_handle_visibility": handle_visibility(scene, arrays, objects),
    }


def write_test_pickles(
    root: Path,
    split: str,
    entry: str,
    scene: SceneSpec,
    arrays: FrameArrays,
    objects: list[int],
    instance_map: np.ndarray,
    generator: np.random.Generator,
) -> None:
    """Write ``gts/<set>/results_*.pkl`` and ``results/nocs_results/<set>/results_*.pkl`` of a test frame.

    Ground truth = every visible instance of class > 0, in meta order (distractors are left out).
    """
    top = _SPLIT_FOLDERS[split][0]
    image_path = f"data/{top}/{entry}"
    parts = entry.split("/")
    ground_truth_ids = [i for i, k in enumerate(objects, start=1) if scene.objects[k].instance.class_id > 0]
    ground_truth_objects = [objects[i - 1] for i in ground_truth_ids]
    gt = ground_truth(scene, arrays, ground_truth_objects, ground_truth_ids, instance_map)
    if split == "camera_val":
        set_name, gt_name = "val", f"results_val_{parts[1]}_{parts[2]}.pkl"
        result_name = gt_name
    else:
        set_name, gt_name = "real_test", f"results_real_test_{parts[1]}_{parts[2]}.pkl"
        result_name = f"results_test_{parts[1]}_{parts[2]}.pkl"
    gts_folder = root / "gts" / set_name
    gts_folder.mkdir(parents=True, exist_ok=True)
    encoding.write_pickle_atomic(gts_folder / gt_name, {"image_path": image_path, **gt})
    detections = simulate_detections(instance_map, ground_truth_ids, [int(c) for c in gt["gt_class_ids"]], 6, generator)
    results_folder = root / "results" / "nocs_results" / set_name
    results_folder.mkdir(parents=True, exist_ok=True)
    encoding.write_pickle_atomic(results_folder / result_name, {"image_path": image_path, **gt, **detections})


# --------------------------------------------------------------------------------------------
# object models


def surface_points(mesh: trimesh.Trimesh, key: list[int]) -> np.ndarray:
    """SPD point sampling: 3 × 1024 points uniformly by area, then farthest-point sampling to 1024.

    Args:
        mesh: normalized mesh (NOCS frame).
        key: seed sequence of the area sampling generator.

    Returns:
        (1024, 3) float64, same frame as `mesh`.
    """
    points, _ = trimesh.sample.sample_surface(mesh, 3 * MODEL_POINTS, seed=np.random.default_rng(key))
    points = np.asarray(points, dtype=np.float64)
    return points[farthest_point_indices(points, MODEL_POINTS)]


def model_points(instance: Instance, seed: int) -> np.ndarray:
    """SPD point model of an instance: (1024, 3) float64 in the NOCS frame, unit diagonal (before the mug fix).

    See `surface_points`; the sampling generator is keyed by (seed, instance name).
    """
    return surface_points(instance_shape(instance).mesh, [seed, *instance.name.encode()])


def mean_shapes(libraries: list[list[Instance]], seed: int) -> np.ndarray:
    """Category priors of ``mean_shapes.npy`` (docs/data_formats.md §2.9), one per NOCS category.

    The reference priors are SPD's category mean shapes of the training models. Here the prior of a
    category is the shape at the mean unit parameter vector of its training instances (the centre of
    the training family), sampled like a model (`surface_points`, keyed by (seed, category)); the mug
    prior gets the SPD mug fix, as the reference's does.

    Args:
        libraries: training-split libraries (CAMERA train, REAL train).
        seed: dataset seed.

    Returns:
        (6, 1024, 3) float64, class-id order.
    """
    priors = []
    for category in NOCS_CATEGORIES:
        units = [instance.unit for library in libraries for instance in library if instance.category == category]
        if not units:
            raise ValueError(f"mean_shapes: no training instance of category {category!r}")
        mean_unit = tuple(float(value) for value in np.mean(units, axis=0))
        points = surface_points(instance_mesh(category, mean_unit).mesh, [seed, *f"mean:{category}".encode()])
        priors.append(mug_fix(points)[0] if category == "mug" else points)
    return np.stack(priors)


def write_mean_shapes(root: Path, libraries: list[list[Instance]], seed: int, priors: np.ndarray | None = None) -> None:
    """Write ``<root>/mean_shapes.npy`` (float64 (6, 1024, 3), see `mean_shapes`), where DPDN loads it.

    `priors` replaces `mean_shapes` (libraries of imported meshes, `user_library.mixed_mean_shapes`).
    """
    buffer = io.BytesIO()
    np.save(buffer, mean_shapes(libraries, seed) if priors is None else priors, allow_pickle=False)
    atomic_write_bytes(root / MEAN_SHAPES_FILE, buffer.getvalue())


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a Wavefront OBJ with ``v x y z`` and 1-based ``f a b c`` lines (the subset SPD parses)."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces]
    encoding.write_text_atomic(path, "".join(lines))


def write_models(root: Path, split: str, library: list[Instance], seed: int, mug_meta: dict) -> int:
    """Write the raw meshes, size files and the SPD pickle of one split's library.

    Args:
        root: dataset root.
        split: one of `NOCS_SPLITS`.
        library: the split's instances.
        seed: dataset seed (keys the surface sampling).
        mug_meta: dict updated in place with ``name → [shift (3,), scale]`` of every mug.

    Returns:
        Number of models written.
    """
    models_root = root / "obj_models"
    pickle_models = {}
    for instance in library:
        write_mesh(models_root, split, instance)
        points = model_points(instance, seed)
        if instance.category == "mug":
            points, shift, scale = mug_fix(points)
            mug_meta[instance.name] = [shift, scale]
        pickle_models[instance.name] = points
    encoding.write_pickle_atomic(models_root / f"{split}.pkl", pickle_models)
    return len(pickle_models)


def write_mesh(models_root: Path, split: str, instance: Instance) -> None:
    """Write the raw mesh and size file of an instance as the NOCS ``obj_models`` download has them.

    CAMERA: ``<train|val>/<synset>/<id>/model.obj`` z-flipped (as ShapeNet stores them) and ``bbox.txt``
    (max corner, min corner); REAL: ``real_<train|test>/<name>.obj`` in metres and ``<name>.txt`` (extents).
    """
    mesh = instance_shape(instance).mesh
    if split.startswith("camera"):
        folder = models_root / split.split("_")[1] / instance.synset / instance.name
        folder.mkdir(parents=True, exist_ok=True)
        # ShapeNet meshes are stored z-flipped relative to NOCS (SPD flips z back, §1.5);
        # the reflection also reverses the face winding.
        flipped = mesh.vertices * np.array([1.0, 1.0, -1.0])
        write_obj(folder / "model.obj", flipped, mesh.faces[:, ::-1])
        lower, upper = flipped.min(axis=0), flipped.max(axis=0)
        encoding.write_text_atomic(
            folder / "bbox.txt", "".join(f"{a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in (upper, lower))
        )
    else:
        folder = models_root / f"real_{split.split('_')[1]}"
        folder.mkdir(parents=True, exist_ok=True)
        vertices = mesh.vertices * instance.diagonal
        write_obj(folder / f"{instance.name}.obj", vertices, mesh.faces)
        extents = vertices.max(axis=0) - vertices.min(axis=0)
        encoding.write_text_atomic(folder / f"{instance.name}.txt", " ".join(f"{v:.9f}" for v in extents) + "\n")


def write_lists(root: Path, records: list[FrameRecord], splits: tuple[str, ...]) -> None:
    """Write the list files of the written splits.

    Entries are sorted as strings, the order of the reference list builders (sorted folder globs,
    so ``scene_10`` precedes ``scene_2``).
    """
    for split in splits:
        top, sub, _ = _SPLIT_FOLDERS[split]
        entries = sorted((r for r in records if r.split == split), key=lambda r: r.entry)
        encoding.write_text_atomic(root / top / f"{sub}_list_all.txt", "".join(f"{r.entry}\n" for r in entries))
        if sub == "train":
            encoding.write_text_atomic(
                root / top / "train_list.txt", "".join(f"{r.entry}\n" for r in entries if r.labelled)
            )


def link_results_folders(root: Path, splits: tuple[str, ...]) -> None:
    """Make ``segmentation_results/{CAMERA25,REAL275}`` relative symbolic links to ``results/nocs_results/…``.

    The reference test code opens ``results/nocs_results/{val,real_test}``, its README (and AG-Pose)
    ``segmentation_results/{CAMERA25,REAL275}``; the links serve both without a second copy of the
    (large) pickles. Where the file system refuses symbolic links only the first location exists,
    which cleanpose's readers accept.
    """
    for split, set_name in (("camera_val", "val"), ("real_test", "real_test")):
        if split not in splits:
            continue
        link = root / "segmentation_results" / RESULTS_LINKS[set_name]
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(root / "results" / "nocs_results" / set_name, link.parent)
        try:
            os.symlink(target, link, target_is_directory=True)
        except OSError as error:
            logger.warning(
                "%s: cannot create a symbolic link to %s (%s); segmentation results are only under "
                "results/nocs_results/",
                link,
                target,
                error.strerror or error,
            )
