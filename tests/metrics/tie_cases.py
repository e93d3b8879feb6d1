"""Result sets full of equal scores, where the official numbers depend on NumPy's generic sort order.

Each builder is deterministic (fixed seeds). The official CleanPose metric code was run on exactly these
sets (NumPy 1.26.4 with its AVX-512 sorts disabled, docs/metrics.md §6.3); test_official_ties pins what it gave.
"""

from __future__ import annotations

import numpy as np

from tests.metrics.result_builders import build_result_set


def _crowded(rng: np.random.Generator, num_images: int, dataset: str, num_classes: int) -> list[dict]:
    """Images of 17–24 overlapping objects of one class each: more than 16 gts and predictions per
    (image, class), so the per-image score sort and each prediction's gt walk leave the insertion sort."""
    results = build_result_set(
        rng,
        num_images,
        dataset,
        mean_objects=24,
        max_objects=24,
        scene_spread_m=0.08,
        duplicate_rate=0.5,
        detection_rate=1.0,
        false_positive_rate=1.0,
    )
    for result in results:
        class_id = int(rng.integers(1, num_classes + 1))
        result["gt_class_ids"][:] = class_id
        result["pred_class_ids"][:] = class_id
    return [result for result in results if len(result["gt_class_ids"]) > 16]


def nocs_quantized_scores() -> list[dict]:
    """NOCS: 300 ordinary images and a few crowded ones, every score rounded to a multiple of 0.25."""
    rng = np.random.default_rng(1501)
    results = build_result_set(
        rng, 300, "nocs", mean_objects=3.0, duplicate_rate=0.3, rotation_noise_deg=6.0, translation_noise_m=0.015
    )
    results += _crowded(rng, 6, "nocs", 6)
    for result in results:
        result["pred_scores"] = (np.ceil(result["pred_scores"] * 4) / 4).astype(np.float32)
    return results


def housecat6d_all_scores_one() -> list[dict]:
    """HouseCat6D with ground-truth masks: every score 1.0, hundreds of predictions per class."""
    rng = np.random.default_rng(1502)
    results = build_result_set(
        rng,
        300,
        "housecat6d",
        mean_objects=6.0,
        max_objects=10,
        duplicate_rate=0.3,
        false_positive_rate=0.6,
        rotation_noise_deg=6.0,
        translation_noise_m=0.015,
    )
    results += _crowded(rng, 6, "housecat6d", 10)
    for result in results:
        result["pred_scores"] = np.ones_like(result["pred_scores"])
    return results


def seventeen_bottles(seed: int) -> list[dict]:
    """17 images of one bottle and one noisy detection each; distinct scores except two equal to 0.8.

    A class pooling 17 predictions is the smallest where the reference's pooled sort is not stable.
    """
    rng = np.random.default_rng(seed)
    results = build_result_set(
        rng,
        17,
        "housecat6d",
        mean_objects=3.0,
        max_objects=1,
        detection_rate=1.0,
        duplicate_rate=0.0,
        false_positive_rate=0.0,
        rotation_noise_deg=8.0,
        translation_noise_m=0.02,
    )
    scores = rng.permutation(np.linspace(0.3, 0.95, 17)).astype(np.float32)
    scores[rng.choice(17, size=2, replace=False)] = np.float32(0.8)
    kept = []
    for result, score in zip(results, scores):
        if len(result["gt_class_ids"]) == 0:
            continue
        result["gt_class_ids"][:] = 2  # bottle
        result["pred_class_ids"][:] = 2
        result["pred_scores"][:] = score
        kept.append(result)
    return kept
