"""Hand-made dataset trees that mirror the real NOCS (after DPDN preprocessing) and HouseCat6D files.

Everything is written by code with the `cleanpose.data.formats.encoding` writers: colour PNG,
16-bit depth in millimetres (REAL, composed CAMERA, HouseCat6D), the CAMERA 3-channel objects-only
depth, masks with background 255 (NOCS) / 0 (HouseCat6D), NOCS coord maps, meta files, DPDN
``_label.pkl`` dicts (Python lists and float32/int32 arrays as DPDN writes them), ``obj_models``
pickles, distributed segmentation-result pickles and HouseCat6D labels/intrinsics.

Images are small (default 120 × 160) so the tests stay fast; the crop-window code clamps to the
actual image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cleanpose.data.formats.encoding import (
    MetaRow,
    write_color,
    write_coord,
    write_depth,
    write_mask,
    write_meta,
    write_pickle_atomic,
    write_text_atomic,
)
from cleanpose.data.formats.nocs import CAMERA_INTRINSICS, REAL_INTRINSICS

HOUSECAT_INTRINSICS = np.array([[400.0, 0.0, 80.5], [0.0, 401.0, 60.25], [0.0, 0.0, 1.0]])


@dataclass
class Instance:
    """One rectangular object: pixel box [r0, r1) × [c0, c1), a depth plane, and its label pose."""

    instance_id: int
    class_id: int
    model: str
    box: tuple[int, int, int, int]
    depth_mm: int
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.float32))
    scale: float = 0.2
    sizes: tuple[float, float, float] = (0.5, 0.7, 0.5)


def draw_frame(height, width, instances, background_mm=1500, background_id=255, seed=0, hole_fraction=0.05):
    """Depth (uint16 mm, background plane with holes), instance mask, RGB for rectangle objects."""
    rng = np.random.default_rng(seed)
    depth = np.full((height, width), background_mm, dtype=np.uint16)
    depth[rng.random((height, width)) < hole_fraction] = 0
    depth[: max(1, height // 20)] = 0  # invalid top rows, as the sensor often gives
    mask = np.full((height, width), background_id, dtype=np.uint8)
    for inst in instances:
        r0, c0, r1, c1 = inst.box
        rows = np.arange(r0, r1)[:, None]
        depth[r0:r1, c0:c1] = inst.depth_mm + (rows - r0)  # 1 mm per row slope
        mask[r0:r1, c0:c1] = inst.instance_id
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return depth, mask, rgb


def label_dict(instances, depth, intrinsics):
    """A DPDN-style label dict; translation = centroid of the object's back-projected pixels (m)."""
    translations, bboxes = [], []
    for inst in instances:
        r0, c0, r1, c1 = inst.box
        rows, cols = np.mgrid[r0:r1, c0:c1]
        z = depth[r0:r1, c0:c1].astype(np.float64) / 1000.0
        x = (cols - intrinsics[0, 2]) * z / intrinsics[0, 0]
        y = (rows - intrinsics[1, 2]) * z / intrinsics[1, 1]
        translations.append([x.mean(), y.mean(), z.mean()])
        bboxes.append([r0, c0, r1, c1])
    return {
        "class_ids": [inst.class_id for inst in instances],
        "instance_ids": [inst.instance_id for inst in instances],
        "model_list": [inst.model for inst in instances],
        "bboxes": np.array(bboxes, dtype=np.int32),
        "scales": np.array([inst.scale for inst in instances], dtype=np.float32),
        "sizes": np.array([inst.sizes for inst in instances], dtype=np.float32),
        "rotations": np.array([inst.rotation for inst in instances], dtype=np.float32),
        "translations": np.array(translations, dtype=np.float32),
    }


def model_points(seed, count=64):
    """A small normalized point cloud (float64, like the SPD pickles)."""
    return np.random.default_rng(seed).uniform(-0.25, 0.25, (count, 3))


def default_instances(seed=0):
    rotation = Rotation.from_euler("xyz", [20, 35, -10], degrees=True).as_matrix().astype(np.float32)
    return [
        Instance(1, 1, "bottle_a", (40, 50, 70, 78), 700, rotation=rotation),  # bottle: symmetric
        Instance(2, 6, "mug_b", (60, 100, 85, 130), 900, scale=0.15, sizes=(0.6, 0.5, 0.6)),  # mug
    ]


def write_nocs_frame(root, prefix, instances, *, height=120, width=160, camera=False, label=True, seed=0):
    """Write all files of one NOCS frame (and, for CAMERA, its composed depth)."""
    root = Path(root)
    base = root / prefix
    base.parent.mkdir(parents=True, exist_ok=True)
    depth, mask, rgb = draw_frame(height, width, instances, seed=seed)
    write_color(f"{base}_color.png", rgb)
    write_mask(f"{base}_mask.png", mask)
    q = np.zeros((height, width, 3))
    write_coord(f"{base}_coord.png", q, mask != 255)
    rows = [MetaRow(inst.instance_id, inst.class_id, inst.model, "02876657" if camera else None) for inst in instances]
    write_meta(f"{base}_meta.txt", rows)
    if camera:
        objects_only = np.where(mask != 255, depth, 0)
        write_depth(f"{base}_depth.png", objects_only, three_channel=True)
        parts = Path(prefix).parts
        composed = root.joinpath("camera_full_depths", *parts[1:-1], f"{parts[-1]}_composed.png")
        composed.parent.mkdir(parents=True, exist_ok=True)
        write_depth(composed, depth)
    else:
        write_depth(f"{base}_depth.png", depth)
    intrinsics = CAMERA_INTRINSICS if camera else REAL_INTRINSICS
    if label:
        write_pickle_atomic(f"{base}_label.pkl", label_dict(instances, depth, intrinsics))
    return depth, mask, rgb


def segmentation_pickle(image_path, mask, detections, gt_instances, depth, intrinsics):
    """A distributed-style segmentation result: detections are (class_id, bool mask (H, W))."""
    height, width = mask.shape
    pred_masks = np.zeros((height, width, len(detections)), dtype=bool)
    boxes = []
    for j, (_, det_mask) in enumerate(detections):
        pred_masks[:, :, j] = det_mask
        rows, cols = np.nonzero(det_mask)
        boxes.append([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    gt = label_dict(gt_instances, depth, intrinsics)
    rts = np.tile(np.eye(4), (len(gt_instances), 1, 1))
    for i, inst in enumerate(gt_instances):
        rts[i, :3, :3] = inst.scale * np.asarray(inst.rotation, dtype=np.float64)
        rts[i, :3, 3] = gt["translations"][i]
    return {
        "image_path": image_path,
        "pred_class_ids": np.array([c for c, _ in detections], dtype=np.int32),
        "pred_bboxes": np.array(boxes, dtype=np.int32).reshape(-1, 4),
        "pred_scores": np.linspace(0.9, 0.5, len(detections)).astype(np.float32),
        "pred_masks": pred_masks,
        "gt_class_ids": np.array([inst.class_id for inst in gt_instances], dtype=np.int32),
        "gt_bboxes": gt["bboxes"],
        "gt_RTs": rts,
        "gt_scales": gt["sizes"],
        "gt_handle_visibility": np.ones(len(gt_instances), dtype=np.int64),
        "image_id": 0,
    }


@dataclass
class NocsTree:
    root: Path
    height: int
    width: int
    real_train: list[str]
    camera_train: list[str]
    real_test_result: Path
    camera_test_result: Path
    test_mask_16: np.ndarray  # the detection with exactly 16 valid pixels
    test_mask_17: np.ndarray


def build_nocs_tree(root, height=120, width=160, num_real=2, num_camera=2) -> NocsTree:
    """A complete NOCS tree: REAL/CAMERA training frames, models, REAL275/CAMERA25 test results."""
    root = Path(root)
    instances = default_instances()
    models = {inst.model: model_points(i) for i, inst in enumerate(instances)}
    real_train, camera_train = [], []
    for k in range(num_real):
        entry = f"train/scene_1/{k:04d}"
        write_nocs_frame(root, f"real/{entry}", instances, height=height, width=width, seed=k)
        real_train.append(entry)
    for k in range(num_camera):
        entry = f"train/{k // 10:05d}/{k % 10:04d}"
        write_nocs_frame(root, f"camera/{entry}", instances, height=height, width=width, camera=True, seed=100 + k)
        camera_train.append(entry)
    write_text_atomic(root / "real/train_list.txt", "".join(f"{e}\n" for e in real_train))
    write_text_atomic(root / "camera/train_list.txt", "".join(f"{e}\n" for e in camera_train))
    (root / "obj_models").mkdir(exist_ok=True)
    write_pickle_atomic(root / "obj_models/real_train.pkl", models)
    write_pickle_atomic(root / "obj_models/camera_train.pkl", models)

    # Test frames: detection 0 = the bottle; 1 = 16 valid pixels; 2 = 17 valid pixels (both in the mug box).
    results = {}
    for source, prefix, name, camera in (
        ("real", "real/test/scene_1/0000", "real_test/results_test_scene_1_0000.pkl", False),
        ("camera", "camera/val/00000/0000", "val/results_val_00000_0000.pkl", True),
    ):
        depth, mask, _ = write_nocs_frame(
            root, prefix, instances, height=height, width=width, camera=camera, label=False, seed=7
        )
        mask_16 = np.zeros((height, width), dtype=bool)
        mask_16[60:64, 100:104] = True
        mask_17 = mask_16.copy()
        mask_17[64, 100] = True
        detections = [(1, mask == 1), (6, mask_16), (6, mask_17)]
        intrinsics = CAMERA_INTRINSICS if camera else REAL_INTRINSICS
        path = root / "results/nocs_results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pickle_atomic(path, segmentation_pickle(f"data/{prefix}", mask, detections, instances, depth, intrinsics))
        results[source] = path
    return NocsTree(root, height, width, real_train, camera_train, results["real"], results["camera"], mask_16, mask_17)


def write_housecat_frame(scene, name, instances, *, height=120, width=160, seed=0):
    """One HouseCat6D frame; its label arrays are ordered by instance id (as the toolbox assumes)."""
    scene = Path(scene)
    for folder in ("rgb", "depth", "instance", "labels"):
        (scene / folder).mkdir(parents=True, exist_ok=True)
    depth, mask, rgb = draw_frame(height, width, instances, background_id=0, seed=seed)
    write_color(scene / "rgb" / f"{name}.png", rgb)
    write_depth(scene / "depth" / f"{name}.png", depth)
    write_mask(scene / "instance" / f"{name}.png", mask)
    base = label_dict(instances, depth, HOUSECAT_INTRINSICS)
    label = {
        "instance_ids": np.array(base["instance_ids"], dtype=np.int64),
        "class_ids": np.array(base["class_ids"], dtype=np.int64),
        "bboxes": base["bboxes"].astype(np.int64),
        "rotations": base["rotations"],
        "translations": base["translations"],
        "gt_scales": np.array([inst.scale * np.asarray(inst.sizes) for inst in instances], dtype=np.float32),
    }
    write_pickle_atomic(scene / "labels" / f"{name}_label.pkl", label)
    return depth, mask, rgb, label


def housecat_instances():
    rotation = Rotation.from_euler("xyz", [-15, 50, 5], degrees=True).as_matrix().astype(np.float32)
    return [
        Instance(1, 2, "bottle-one", (30, 40, 60, 70), 800, rotation=rotation),  # bottle (cat 1): symmetric
        Instance(2, 9, "shoe-two", (70, 90, 100, 140), 1100),  # shoe
    ]


def build_housecat_tree(root, height=120, width=160, frames_per_scene=2):
    """HouseCat6D tree with two training scenes and one test scene."""
    root = Path(root)
    instances = housecat_instances()
    for scene_name in ("scene01", "scene02", "test_scene1"):
        scene = root / scene_name
        for k in range(frames_per_scene):
            write_housecat_frame(scene, f"{k:06d}", instances, height=height, width=width, seed=k)
        np.savetxt(scene / "intrinsics.txt", HOUSECAT_INTRINSICS)
        write_text_atomic(scene / "meta.txt", "".join(f"{i.instance_id} {i.class_id} {i.model}\n" for i in instances))
    return root


@pytest.fixture
def nocs_tree(tmp_path) -> NocsTree:
    return build_nocs_tree(tmp_path / "data")


@pytest.fixture
def housecat_tree(tmp_path) -> Path:
    return build_housecat_tree(tmp_path / "housecat6d")
