"""Write rendered frames and object models in the HouseCat6D layout (docs/data_formats.md §5).

Layout under the dataset root:

* ``scene01 …`` (training) and ``test_scene1 …`` (test) folders, each with ``intrinsics.txt``
  (3×3 K), ``meta.txt`` (``inst_id class_id <class>-<name>``, one line per object of the scene),
  ``rgb/<NNNNNN>.png`` (colour), ``depth/<NNNNNN>.png`` (16-bit noisy sensor depth, mm),
  ``instance/<NNNNNN>.png`` (8-bit instance ids, background 0) and ``labels/<NNNNNN>_label.pkl``.
* ``obj_models_small_size_final/<class>/<class>-<name>.obj``: metric meshes.

Instance ids are fixed per scene (scene object index + 1), and every label file lists all objects of
the scene ordered by instance id (the toolbox indexes ``rotations[inst_id − 1]``); an object not seen
in a frame keeps its pose and gets the box ``[0, 0, 0, 0]``. The colour image is written last, since
the readers enumerate ``rgb/*.png``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from cleanpose.data.formats import encoding
from cleanpose.data.synth.scene import FrameArrays, Instance, SceneSpec, instance_shape
from cleanpose.data.synth.sensor import to_millimetres
from cleanpose.data.synth.writer_nocs import mask_bbox, normalized_extents, write_obj

logger = logging.getLogger(__name__)

HOUSECAT6D_IMAGE_SIZE = (1096, 852)
"""(W, H) of HouseCat6D images."""

HOUSECAT6D_SPLITS = ("train", "test")

MODELS_FOLDER = "obj_models_small_size_final"


@dataclasses.dataclass(frozen=True)
class HouseCatFrameRecord:
    """One written frame."""

    split: str
    entry: str
    """``<scene folder>/rgb/<NNNNNN>.png``."""
    instances: int
    """Objects visible in the frame."""


def scene_folder(split: str, scene_index: int) -> str:
    """``scene01``, ``scene02`` … for training; ``test_scene1`` … for test."""
    return f"scene{scene_index + 1:02d}" if split == "train" else f"test_scene{scene_index + 1}"


def scene_intrinsics(generator: np.random.Generator, image_size: tuple[int, int]) -> np.ndarray:
    """Per-scene intrinsics: about 910 px focal length at 1096×852 with small per-scene jitter."""
    width, height = image_size
    ratio = width / HOUSECAT6D_IMAGE_SIZE[0]
    focal = 910.0 * ratio * (1.0 + generator.normal(0.0, 0.01))
    return np.array(
        [
            [focal, 0.0, (width - 1) / 2 + generator.normal(0.0, 2.0) * ratio],
            [0.0, focal * (1.0 + generator.normal(0.0, 0.002)), (height - 1) / 2 + generator.normal(0.0, 2.0) * ratio],
            [0.0, 0.0, 1.0],
        ]
    )


def write_scene_files(root: Path, split: str, scene_index: int, scene: SceneSpec, intrinsics: np.ndarray) -> Path:
    """Create the scene folder with ``intrinsics.txt`` and ``meta.txt``; returns the folder."""
    folder = root / scene_folder(split, scene_index)
    for sub in ("rgb", "depth", "instance", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    encoding.write_text_atomic(
        folder / "intrinsics.txt", "".join(" ".join(f"{value:.6f}" for value in row) + "\n" for row in intrinsics)
    )
    encoding.write_meta(
        folder / "meta.txt",
        [
            encoding.MetaRow(k + 1, placed.instance.class_id, placed.instance.name)
            for k, placed in enumerate(scene.objects)
        ],
    )
    return folder


def write_frame(
    root: Path, split: str, scene_index: int, frame_index: int, scene: SceneSpec, arrays: FrameArrays
) -> HouseCatFrameRecord:
    """Write depth, instance map, label and (last) colour of one frame.

    Args:
        root: dataset root.
        split: "train" or "test".
        scene_index: 0-based scene.
        frame_index: 0-based frame (file name ``%06d``).
        scene: the scene (its folder must exist, see `write_scene_files`).
        arrays: the rendered frame.
    """
    folder = root / scene_folder(split, scene_index)
    name = f"{frame_index:06d}"
    instance_map = (arrays.object_index.astype(np.int32) + 1).astype(np.uint8)  # background 0
    encoding.write_depth(folder / "depth" / f"{name}.png", to_millimetres(arrays.sensor_depth))
    encoding.write_mask(folder / "instance" / f"{name}.png", instance_map)
    boxes = []
    visible = 0
    for k in range(len(scene.objects)):
        mask = instance_map == k + 1
        visible += bool(mask.any())
        boxes.append(mask_bbox(mask) if mask.any() else np.zeros(4, dtype=np.int32))
    label = {
        "instance_ids": np.arange(1, len(scene.objects) + 1, dtype=np.int32),
        "class_ids": np.array([placed.instance.class_id for placed in scene.objects], dtype=np.int32),
        "bboxes": np.array(boxes, dtype=np.int32).reshape(-1, 4),
        "rotations": arrays.rotations.astype(np.float32),
        "translations": arrays.translations.astype(np.float32),
        "gt_scales": np.array(
            [arrays.scales[k] * normalized_extents(placed.instance) for k, placed in enumerate(scene.objects)],
            dtype=np.float32,
        ).reshape(-1, 3),
    }
    encoding.write_pickle_atomic(folder / "labels" / f"{name}_label.pkl", label)
    encoding.write_color(folder / "rgb" / f"{name}.png", arrays.color)
    return HouseCatFrameRecord(split, f"{scene_folder(split, scene_index)}/rgb/{name}.png", visible)


def write_models(root: Path, library: list[Instance]) -> int:
    """Write the metric meshes ``obj_models_small_size_final/<class>/<class>-<name>.obj``; returns the count."""
    for instance in library:
        folder = root / MODELS_FOLDER / instance.category
        folder.mkdir(parents=True, exist_ok=True)
        mesh = instance_shape(instance).mesh
        write_obj(folder / f"{instance.name}.obj", mesh.vertices * instance.diagonal, mesh.faces)
    return len(library)
