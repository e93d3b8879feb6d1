"""Synthetic result sets shaped like the reference's per-image result dicts (tests and benchmarks).

Everything is drawn from an explicit ``numpy.random.Generator``; arrays are float32 like the
reference's files.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from cleanpose.metrics.datasets import get_dataset


def _pose(rotation: np.ndarray, translation: np.ndarray, scale: float) -> np.ndarray:
    pose = np.eye(4, dtype=np.float32)
    pose[:3, :3] = scale * rotation
    pose[:3, 3] = translation
    return pose


def _unit_extents(rng: np.random.Generator) -> np.ndarray:
    extents = rng.uniform(0.3, 1.0, size=3)
    return extents / np.linalg.norm(extents)


def _rotation(rng: np.random.Generator, max_tilt_deg: float = 30.0) -> np.ndarray:
    # objects stand roughly upright in a camera looking down at a table
    tilt = Rotation.from_rotvec(np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg)) * np.array([1.0, 0, 0]))
    spin = Rotation.from_rotvec(rng.uniform(-np.pi, np.pi) * np.array([0, 1.0, 0]))
    return (Rotation.from_rotvec([np.pi, 0, 0]) * tilt * spin).as_matrix()


def _perturbed(rng, rotation, translation, scale, extents, rotation_deg, translation_m, y_spin: bool):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    noise = Rotation.from_rotvec(np.deg2rad(abs(rng.normal(0.0, rotation_deg))) * axis).as_matrix()
    new_rotation = rotation @ noise
    if y_spin:  # symmetric objects: any rotation about the own y axis is as good as none
        new_rotation = new_rotation @ Rotation.from_rotvec([0, rng.uniform(-np.pi, np.pi), 0]).as_matrix()
    new_translation = translation + rng.normal(0.0, translation_m, size=3)
    size = scale * extents * rng.uniform(0.85, 1.15, size=3)
    return new_rotation, new_translation, float(np.linalg.norm(size)), size / np.linalg.norm(size)


def build_result_set(
    rng: np.random.Generator,
    num_images: int,
    dataset: str = "nocs",
    *,
    mean_objects: float = 1.78,
    detection_rate: float = 0.95,
    false_positive_rate: float = 0.45,
    duplicate_rate: float = 0.06,
    rotation_noise_deg: float = 4.0,
    translation_noise_m: float = 0.008,
    max_objects: int = 6,
    scene_spread_m: float = 0.3,
) -> list[dict]:
    """A result set: per image a few gts, noisy detections of most, duplicates and false positives.

    Args:
        rng: source of every draw.
        num_images: number of result dicts.
        dataset: ``"nocs"`` or ``"housecat6d"`` (class ids and handle visibility).
        mean_objects: mean number of gts per image (REAL275: 4,907 / 2,754 ≈ 1.78).
        detection_rate: probability that a gt gets a prediction.
        false_positive_rate: probability that an image gets one false positive.
        duplicate_rate: probability that a detection is duplicated (second, noisier prediction).
        rotation_noise_deg: spread of the rotation error of a detection.
        translation_noise_m: spread of the translation error per axis.
        max_objects: cap on gts per image.
        scene_spread_m: half-width of the region objects are placed in (small = crowded, overlapping).
    Returns:
        One dict per image with the keys of docs/metrics.md §1.1 (float32 arrays).
    """
    spec = get_dataset(dataset)
    num_classes = spec.num_classes
    symmetric_ids = {spec.class_names.index(name) + 1 for name in spec.rotation_symmetric}
    results = []
    for _ in range(num_images):
        num_gts = int(min(rng.poisson(mean_objects - 0.5) + (rng.random() < 0.5), max_objects))
        gt_class_ids = rng.integers(1, num_classes + 1, size=num_gts)
        gt_RTs, gt_scales, handles = [], [], []
        pred_class_ids, pred_RTs, pred_scales, pred_scores = [], [], [], []
        for class_id in gt_class_ids:
            rotation = _rotation(rng)
            translation = np.array(
                [
                    rng.uniform(-scene_spread_m, scene_spread_m),
                    rng.uniform(-scene_spread_m, scene_spread_m) * 2 / 3,
                    rng.uniform(0.5, 1.3),
                ]
            )
            scale = rng.uniform(0.1, 0.4)
            extents = _unit_extents(rng)
            gt_RTs.append(_pose(rotation, translation, scale))
            gt_scales.append(extents)
            handles.append(int(rng.random() < 0.7))
            copies = int(rng.random() < detection_rate)
            copies += int(copies and rng.random() < duplicate_rate)
            for copy in range(copies):
                noisy = _perturbed(
                    rng,
                    rotation,
                    translation,
                    scale,
                    extents,
                    rotation_noise_deg * (1 + 2 * copy),
                    translation_noise_m * (1 + 2 * copy),
                    y_spin=int(class_id) in symmetric_ids,
                )
                pred_class_ids.append(int(class_id))
                pred_RTs.append(_pose(noisy[0], noisy[1], noisy[2]))
                pred_scales.append(noisy[3])
                pred_scores.append(rng.uniform(0.3, 1.0))
        if rng.random() < false_positive_rate:
            # half of them sit on a real object with the wrong class, half anywhere
            if num_gts and rng.random() < 0.5:
                target = int(rng.integers(num_gts))
                pose = gt_RTs[target].copy()
                class_id = int((gt_class_ids[target] % num_classes) + 1)
            else:
                translation = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3), rng.uniform(0.5, 1.5)])
                pose = _pose(_rotation(rng), translation, rng.uniform(0.1, 0.4))
                class_id = int(rng.integers(1, num_classes + 1))
            pred_class_ids.append(class_id)
            pred_RTs.append(pose)
            pred_scales.append(_unit_extents(rng))
            pred_scores.append(rng.uniform(0.05, 0.9))
        num_preds = len(pred_class_ids)
        results.append(
            {
                "gt_class_ids": gt_class_ids.astype(np.int32),
                "gt_RTs": np.array(gt_RTs, dtype=np.float32).reshape(num_gts, 4, 4),
                "gt_scales": np.array(gt_scales, dtype=np.float32).reshape(num_gts, 3),
                "gt_handle_visibility": np.array(handles, dtype=np.int64),
                "gt_bboxes": rng.integers(1, 480, size=(num_gts, 4)).astype(np.int32),
                "pred_class_ids": np.array(pred_class_ids, dtype=np.int64),
                "pred_scores": np.array(pred_scores, dtype=np.float32),
                "pred_RTs": np.array(pred_RTs, dtype=np.float32).reshape(num_preds, 4, 4),
                "pred_scales": np.array(pred_scales, dtype=np.float32).reshape(num_preds, 3),
                "pred_bboxes": rng.integers(1, 480, size=(num_preds, 4)).astype(np.int32),
            }
        )
    return results
