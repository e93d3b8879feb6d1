"""End-to-end checks of cleanpose.metrics.evaluate: hand-derived cases of docs/metrics.md §14 and a
randomized comparison with a literal float64 brute-force implementation of docs/metrics.md written here."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cleanpose.metrics import evaluate_results, metrics_to_json
from cleanpose.metrics.argsort import introsort_argsort
from cleanpose.metrics.evaluate import HEADLINE_IOU_KEYS, HEADLINE_POSE_KEYS
from tests.metrics.result_builders import build_result_set

NOCS_CLASSES = ["bottle", "bowl", "camera", "can", "laptop", "mug"]
HOUSECAT_CLASSES = ["box", "bottle", "can", "cup", "remote", "teapot", "cutlery", "glass", "shoe", "tube"]

# --------------------------------------------------------------------------------------------------
# Brute force: docs/metrics.md followed literally, plain Python loops over float64 values.

CORNER_SIGNS = [(1, 1, 1), (1, 1, -1), (-1, 1, 1), (-1, 1, -1), (1, -1, 1), (1, -1, -1), (-1, -1, 1), (-1, -1, -1)]


def _matmul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]


def _corners(pose, extents):
    out = []
    for signs in CORNER_SIGNS:
        local = [signs[axis] * extents[axis] / 2 for axis in range(3)] + [1.0]
        out.append([sum(pose[row][col] * local[col] for col in range(4)) for row in range(3)])
    return out


def _interval_iou(intervals_1, intervals_2):
    overlaps = [min(hi1, hi2) - max(lo1, lo2) for (lo1, hi1), (lo2, hi2) in zip(intervals_1, intervals_2)]
    intersection = 0.0 if min(overlaps) < 0 else math.prod(overlaps)
    union = math.prod(hi - lo for lo, hi in intervals_1) + math.prod(hi - lo for lo, hi in intervals_2) - intersection
    return intersection / union


def _box_iou(pred_pose, pred_extents, gt_pose, gt_extents, axis_aligned):
    corners_1, corners_2 = _corners(pred_pose, pred_extents), _corners(gt_pose, gt_extents)
    if axis_aligned:  # one interval per camera axis
        intervals = [
            [(min(c[a] for c in corners), max(c[a] for c in corners)) for a in range(3)]
            for corners in (corners_1, corners_2)
        ]
    else:  # the official axis bug: one interval per corner, over its x, y, z
        intervals = [[(min(c), max(c)) for c in corners] for corners in (corners_1, corners_2)]
    return _interval_iou(*intervals)


def _pair_iou(pred_pose, pred_extents, gt_pose, gt_extents, symmetric, axis_aligned):
    if not symmetric:
        return _box_iou(pred_pose, pred_extents, gt_pose, gt_extents, axis_aligned)
    best = 0.0
    for step in range(20):
        theta = 2 * math.pi * step / 20
        y_rotation = [
            [math.cos(theta), 0, math.sin(theta), 0],
            [0, 1, 0, 0],
            [-math.sin(theta), 0, math.cos(theta), 0],
            [0, 0, 0, 1],
        ]
        best = max(best, _box_iou(_matmul(pred_pose, y_rotation), pred_extents, gt_pose, gt_extents, axis_aligned))
    return best


def _decompose(pose):
    linear = [row[:3] for row in pose[:3]]
    det = (
        linear[0][0] * (linear[1][1] * linear[2][2] - linear[1][2] * linear[2][1])
        - linear[0][1] * (linear[1][0] * linear[2][2] - linear[1][2] * linear[2][0])
        + linear[0][2] * (linear[1][0] * linear[2][1] - linear[1][1] * linear[2][0])
    )
    scale = math.copysign(abs(det) ** (1 / 3), det)
    return [[value / scale for value in row] for row in linear], [pose[row][3] for row in range(3)]


def _pose_errors(pred_pose, gt_pose, symmetric):
    rotation_1, translation_1 = _decompose(pred_pose)
    rotation_2, translation_2 = _decompose(gt_pose)
    if symmetric:
        a = [rotation_1[row][1] for row in range(3)]
        b = [rotation_2[row][1] for row in range(3)]
        cos = sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
        theta = math.acos(cos) if -1 <= cos <= 1 else math.nan
    else:
        trace = sum(rotation_1[i][k] * rotation_2[i][k] for i in range(3) for k in range(3))
        theta = math.acos(min(1.0, max(-1.0, (trace - 1) / 2)))
    shift = math.sqrt(sum((x - y) ** 2 for x, y in zip(translation_1, translation_2)))
    return theta * 180 / math.pi, shift * 100


def _ascending(values, tie_order):
    """The official ``np.argsort``: stable (NaN last), or the introsort port (checked against NumPy in
    test_argsort)."""
    if tie_order == "reference":
        return introsort_argsort(np.array(values, dtype=np.float64)).tolist()
    return sorted(
        range(len(values)), key=lambda k: (math.isnan(values[k]), 0.0 if math.isnan(values[k]) else values[k], k)
    )


def _score_order(scores, tie_order="stable"):
    """Descending score; stable: among equal scores the later position first."""
    return _ascending(scores, tie_order)[::-1]


def _brute_ap(flags, scores, num_gt, tie_order="stable"):
    precisions, recalls, true_positives = [], [], 0
    for rank, index in enumerate(_score_order(scores, tie_order), start=1):
        true_positives += flags[index]
        precisions.append(true_positives / rank)
        recalls.append(float(np.float32(true_positives) / np.float32(num_gt)) if num_gt else math.nan)
    precisions = [0.0] + precisions + [0.0]
    recalls = [0.0] + recalls + [1.0]
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    return sum(
        (recalls[i] - recalls[i - 1]) * precisions[i] for i in range(1, len(recalls)) if recalls[i] != recalls[i - 1]
    )


def _brute_iou_match(overlaps, thresholds_count_gts, tau, tie_order):
    num_preds, num_gts = len(overlaps), thresholds_count_gts
    gt_matched, pred_matched = [False] * num_gts, [False] * num_preds
    for i in range(num_preds):
        candidates = _ascending(overlaps[i], tie_order)[::-1]
        for j in candidates:
            if gt_matched[j]:
                continue
            if overlaps[i][j] < tau:
                break
            if overlaps[i][j] > tau:
                gt_matched[j] = pred_matched[i] = True
                break
    return pred_matched, gt_matched


def _brute_pose_match(errors, degrees, cm, tie_order):
    num_preds = len(errors)
    num_gts = len(errors[0]) if errors else 0
    gt_matched, pred_matched = [False] * num_gts, [False] * num_preds
    for i in range(num_preds):
        candidates = _ascending([errors[i][j][0] + errors[i][j][1] for j in range(num_gts)], tie_order)
        for j in candidates:
            theta, shift = errors[i][j]
            if gt_matched[j] or theta > degrees or shift > cm:
                continue
            gt_matched[j] = pred_matched[i] = True
            break
    return pred_matched, gt_matched


def brute_force_metrics(
    results,
    classes,
    iou_symmetric,
    rotation_symmetric,
    aa_symmetric,
    handle_class,
    iou_thresholds,
    pose_thresholds,
    tie_order="stable",
):
    """APs × 100: {("iou", c, τ), ("aa", c, τ), ("pose", c, D, S)} → value, straight from docs/metrics.md."""
    out = {}
    for class_id, name in enumerate(classes, start=1):
        pooled = {
            key: ([], [])
            for key in [("iou", t) for t in iou_thresholds]
            + [("aa", t) for t in iou_thresholds]
            + [("pose", d, s) for d, s in pose_thresholds]
        }
        num_gt_all, num_gt_kept = 0, 0
        for result in results:
            if len(result["gt_class_ids"]) == 0 and len(result["pred_class_ids"]) == 0:
                continue
            gts = [j for j in range(len(result["gt_class_ids"])) if result["gt_class_ids"][j] == class_id]
            preds = [i for i in range(len(result["pred_class_ids"])) if result["pred_class_ids"][i] == class_id]
            scores = [float(result["pred_scores"][i]) for i in preds]
            preds = [preds[k] for k in _score_order(scores, tie_order)]
            scores = [float(result["pred_scores"][i]) for i in preds]
            handles = result.get("gt_handle_visibility", np.ones(len(result["gt_class_ids"])))
            handle_zero = [name == handle_class and handles[j] == 0 for j in gts]
            pred_poses = [result["pred_RTs"][i].astype(float).tolist() for i in preds]
            gt_poses = [result["gt_RTs"][j].astype(float).tolist() for j in gts]
            pred_extents = [result["pred_scales"][i].astype(float).tolist() for i in preds]
            gt_extents = [result["gt_scales"][j].astype(float).tolist() for j in gts]
            num_gt_all += len(gts)
            overlaps = {
                kind: [
                    [
                        float(
                            np.float32(
                                _pair_iou(
                                    pred_poses[i],
                                    pred_extents[i],
                                    gt_poses[j],
                                    gt_extents[j],
                                    (name in aa_symmetric)
                                    if kind == "aa"
                                    else (name in iou_symmetric or handle_zero[j]),
                                    kind == "aa",
                                )
                            )
                        )
                        for j in range(len(gts))
                    ]
                    for i in range(len(preds))
                ]
                for kind in ("iou", "aa")
            }
            for kind in ("iou", "aa"):
                for tau in iou_thresholds:
                    flags, _ = _brute_iou_match(overlaps[kind], len(gts), tau, tie_order)
                    pooled[(kind, tau)][0].extend(flags)
                    pooled[(kind, tau)][1].extend(scores)
            kept_preds, kept_gts = _brute_iou_match(overlaps["iou"], len(gts), 0.1, tie_order)
            kept_i = [i for i in range(len(preds)) if kept_preds[i]]
            kept_j = [j for j in range(len(gts)) if kept_gts[j]]
            num_gt_kept += len(kept_j)
            errors = [
                [_pose_errors(pred_poses[i], gt_poses[j], name in rotation_symmetric or handle_zero[j]) for j in kept_j]
                for i in kept_i
            ]
            for degrees, cm in pose_thresholds:
                flags, _ = (
                    _brute_pose_match(errors, degrees, cm, tie_order)
                    if kept_i and kept_j
                    else ([False] * len(kept_i), [])
                )
                pooled[("pose", degrees, cm)][0].extend(flags)
                pooled[("pose", degrees, cm)][1].extend(scores[i] for i in kept_i)
        for key, (flags, scores) in pooled.items():
            num_gt = num_gt_kept if key[0] == "pose" else num_gt_all
            out[(key[0], class_id, *key[1:])] = 100 * _brute_ap(flags, scores, num_gt, tie_order)
    return out


IOU_CHECKED = [0.0, 0.05, 0.1, 0.25, 0.5, 0.6, 0.75, 0.9]
POSE_CHECKED = [
    (5.0, 2.0),
    (5.0, 5.0),
    (10.0, 2.0),
    (10.0, 5.0),
    (3.0, 100.0),
    (20.0, 100.0),
    (360.0, 1.0),
    (360.0, 3.5),
]


@pytest.mark.parametrize(
    "dataset, seed, spread, negate, tie_order",
    [
        ("nocs", 0, 0.3, False, "stable"),
        ("nocs", 1, 0.04, False, "reference"),
        ("housecat6d", 2, 0.3, False, "stable"),
        ("housecat6d", 3, 0.04, False, "reference"),
        ("nocs", 4, 0.04, True, "reference"),
    ],
)
def test_matches_literal_brute_force(dataset, seed, spread, negate, tie_order):
    rng = np.random.default_rng(seed)
    results = build_result_set(
        rng,
        10,
        dataset,
        mean_objects=3.0,
        max_objects=5,
        scene_spread_m=spread,
        duplicate_rate=0.4,
        rotation_noise_deg=8.0,
        translation_noise_m=0.02,
    )
    if negate:  # an untrained network can predict negative sizes; the official code takes them as they are
        for result in results:
            result["pred_scales"] *= rng.choice([-1.0, 1.0], size=result["pred_scales"].shape).astype(np.float32)
    results.append({key: value[:0] for key, value in results[0].items()})  # an empty image is skipped
    for result in results[::3]:  # equal scores inside images and across them
        result["pred_scores"][:] = np.float32(0.5)
    if dataset == "nocs":
        classes, symmetric, handle = NOCS_CLASSES, {"bottle", "bowl", "can"}, "mug"
        aa_symmetric = symmetric
    else:
        classes, symmetric, handle = HOUSECAT_CLASSES, {"bottle", "can", "glass"}, None
        aa_symmetric = symmetric
        for result in results:
            result["gt_handle_visibility"] = np.ones(len(result["gt_class_ids"]))
    metrics = evaluate_results(results, dataset, tie_order=tie_order)
    expected = brute_force_metrics(
        results, classes, symmetric, symmetric, aa_symmetric, handle, IOU_CHECKED, POSE_CHECKED, tie_order
    )
    for key, value in expected.items():
        if key[0] == "pose":
            ours = metrics.pose_ap_at(key[2], key[3])[key[1] - 1]
        else:
            ours = metrics.iou_ap_at(key[2], axis_aligned=key[0] == "aa")[key[1] - 1]
        if math.isnan(value):
            assert math.isnan(ours), key
        else:
            assert ours == pytest.approx(value, abs=1e-6), key


# --------------------------------------------------------------------------------------------------
# Hand-derived cases (docs/metrics.md §14)


def _pose(rotation=None, translation=(0.0, 0.0, 1.0), scale=0.2):
    rotation = np.eye(3) if rotation is None else rotation
    pose = np.eye(4, dtype=np.float32)
    pose[:3, :3] = scale * np.asarray(rotation)
    pose[:3, 3] = translation
    return pose


def _image(gts, preds, handles=None):
    """gts: [(class_id, pose, extents)], preds: [(class_id, pose, extents, score)]."""
    return {
        "gt_class_ids": np.array([g[0] for g in gts], dtype=np.int32),
        "gt_RTs": np.array([g[1] for g in gts], dtype=np.float32).reshape(-1, 4, 4),
        "gt_scales": np.array([g[2] for g in gts], dtype=np.float32).reshape(-1, 3),
        "gt_handle_visibility": np.array(handles if handles is not None else [1] * len(gts)),
        "pred_class_ids": np.array([p[0] for p in preds], dtype=np.int64),
        "pred_RTs": np.array([p[1] for p in preds], dtype=np.float32).reshape(-1, 4, 4),
        "pred_scales": np.array([p[2] for p in preds], dtype=np.float32).reshape(-1, 3),
        "pred_scores": np.array([p[3] for p in preds], dtype=np.float32),
    }


EXTENTS = (0.5, 0.6, 0.62)


def _rotated(axis, degrees):
    return Rotation.from_rotvec(np.deg2rad(degrees) * np.asarray(axis, dtype=float)).as_matrix()


def test_perfect_predictions_give_100_everywhere():
    results = []
    for index, class_id in enumerate(range(1, 7)):
        pose = _pose(_rotated([0.3, 1, 0.2], 40 * index), (0.1 * index - 0.3, 0.05, 0.8 + 0.1 * index))
        results.append(_image([(class_id, pose, EXTENTS)], [(class_id, pose, EXTENTS, 0.9)]))
    document = metrics_to_json(evaluate_results(results, "nocs"))
    for section in (
        document["classes"],
        {"mean": document["mean"]},
        document["iou_axis_aligned"]["classes"],
        {"mean": document["iou_axis_aligned"]["mean"]},
    ):
        for values in section.values():
            assert all(value == pytest.approx(100.0) for value in values.values())
    assert list(document["classes"]) == NOCS_CLASSES
    assert list(document["mean"]) == [*HEADLINE_IOU_KEYS, *HEADLINE_POSE_KEYS]


@pytest.mark.parametrize("degrees, passes_5, passes_10", [(4.9, True, True), (5.1, False, True), (10.1, False, False)])
def test_rotation_limits_of_a_non_symmetric_box(degrees, passes_5, passes_10):
    gt = _pose(_rotated([0, 1, 0], 30))
    pred = _pose(_rotated([0, 1, 0], 30) @ _rotated([1, 0, 0], degrees))
    metrics = evaluate_results([_image([(3, gt, EXTENTS)], [(3, pred, EXTENTS, 0.8)])], "nocs")  # camera
    assert metrics.pose_ap_at(5, 2)[2] == (100.0 if passes_5 else 0.0)
    assert metrics.pose_ap_at(10, 2)[2] == (100.0 if passes_10 else 0.0)


@pytest.mark.parametrize(
    "shift_cm, passes_2, passes_5", [(1.9, True, True), (2.1, False, True), (4.9, False, True), (5.1, False, False)]
)
def test_translation_limits_are_inclusive_centimetres(shift_cm, passes_2, passes_5):
    gt = _pose(translation=(0.05, -0.02, 0.9))
    pred = _pose(translation=(0.05 + shift_cm / 100, -0.02, 0.9))
    metrics = evaluate_results([_image([(5, gt, EXTENTS)], [(5, pred, EXTENTS, 0.8)])], "nocs")  # laptop
    assert metrics.pose_ap_at(5, 2)[4] == (100.0 if passes_2 else 0.0)
    assert metrics.pose_ap_at(10, 5)[4] == (100.0 if passes_5 else 0.0)


@pytest.mark.parametrize("class_id", [1, 2, 4])  # bottle, bowl, can
@pytest.mark.parametrize("angle", [37.0, 90.0, 180.0])
def test_symmetric_classes_ignore_rotation_about_y(class_id, angle):
    gt = _pose(_rotated([1, 0, 0.2], 25))
    pred = _pose(_rotated([1, 0, 0.2], 25) @ _rotated([0, 1, 0], angle))
    metrics = evaluate_results([_image([(class_id, gt, EXTENTS)], [(class_id, pred, EXTENTS, 0.8)])], "nocs")
    assert metrics.pose_ap_at(5, 2)[class_id - 1] == 100.0


@pytest.mark.parametrize("handle, expected", [(0, 100.0), (1, 0.0)])
def test_mug_is_symmetric_only_without_visible_handle(handle, expected):
    gt = _pose(_rotated([1, 0, 0], 20))
    pred = _pose(_rotated([1, 0, 0], 20) @ _rotated([0, 1, 0], 30))
    metrics = evaluate_results([_image([(6, gt, EXTENTS)], [(6, pred, EXTENTS, 0.8)], handles=[handle])], "nocs")
    assert metrics.pose_ap_at(10, 5)[5] == expected
    assert metrics.pose_ap_at(29, 100)[5] == expected  # visible handle: the full 30° angle counts
    assert metrics.pose_ap_at(31, 100)[5] == 100.0


def test_class_with_predictions_but_no_gt_is_undefined_for_iou_only():
    gt_pose = _pose(translation=(0.0, 0.0, 0.8))
    results = [
        _image(
            [(1, gt_pose, EXTENTS)], [(1, gt_pose, EXTENTS, 0.9), (3, _pose(translation=(0.2, 0, 1.0)), EXTENTS, 0.7)]
        )
    ]
    document = metrics_to_json(evaluate_results(results, "nocs"))
    assert document["classes"]["camera"]["iou25"] is None and document["classes"]["camera"]["iou75"] is None
    assert document["iou_axis_aligned"]["classes"]["camera"]["iou50"] is None
    assert document["classes"]["camera"]["5deg2cm"] == 0.0
    assert document["mean"]["iou25"] is None and document["iou_axis_aligned"]["mean"]["iou25"] is None
    assert document["mean"]["5deg2cm"] == pytest.approx(100 / 6)  # bottle 100, absent classes count as 0
    assert document["classes"]["bowl"] == {key: 0.0 for key in document["classes"]["bowl"]}


def test_missed_objects_lower_iou_ap_but_not_pose_ap():
    first, second = _pose(translation=(-0.2, 0, 0.9)), _pose(translation=(0.2, 0, 0.9))
    results = [_image([(5, first, EXTENTS), (5, second, EXTENTS)], [(5, first, EXTENTS, 0.9)])]
    metrics = evaluate_results(results, "nocs")
    assert metrics.iou_ap_at(0.5)[4] == pytest.approx(50.0)  # recall 1/2 at precision 1
    assert metrics.pose_ap_at(5, 2)[4] == 100.0  # the missed gt never enters the pose metric


@pytest.mark.parametrize("false_positive_score, expected_iou_ap", [(0.5, 100.0), (0.95, 50.0)])
def test_false_positive_ranked_above_or_below(false_positive_score, expected_iou_ap):
    gt = _pose(translation=(-0.2, 0, 0.9))
    far_away = _pose(translation=(0.3, 0.2, 1.4))
    results = [_image([(5, gt, EXTENTS)], [(5, gt, EXTENTS, 0.9), (5, far_away, EXTENTS, false_positive_score)])]
    metrics = evaluate_results(results, "nocs")
    assert metrics.iou_ap_at(0.25)[4] == pytest.approx(expected_iou_ap)
    assert metrics.pose_ap_at(5, 2)[4] == 100.0  # a false positive without IoU > 0.1 leaves the pose metric


def test_duplicate_detection_is_a_false_positive_after_the_first():
    gt = _pose(translation=(0.0, 0, 0.9))
    duplicate = _pose(_rotated([1, 0, 0], 40), translation=(0.01, 0, 0.9))
    higher_first = [_image([(5, gt, EXTENTS)], [(5, gt, EXTENTS, 0.9), (5, duplicate, EXTENTS, 0.6)])]
    metrics = evaluate_results(higher_first, "nocs")
    assert metrics.iou_ap_at(0.25)[4] == pytest.approx(100.0)
    assert metrics.pose_ap_at(5, 2)[4] == 100.0  # the duplicate lost the gt at τ = 0.1: out of the pose metric
    duplicate_first = [_image([(5, gt, EXTENTS)], [(5, gt, EXTENTS, 0.6), (5, duplicate, EXTENTS, 0.9)])]
    metrics = evaluate_results(duplicate_first, "nocs")
    assert metrics.pose_ap_at(5, 2)[4] == 0.0  # the 40°-off duplicate took the gt


def test_equal_scores_tie_rule_of_section_14():
    gt = _pose(translation=(0.0, 0, 0.9))
    far_away = _pose(translation=(0.3, 0.2, 1.4))
    results = [_image([(5, gt, EXTENTS)], [(5, gt, EXTENTS, 0.5), (5, far_away, EXTENTS, 0.5)])]
    # per image the false positive (stored later) goes first; pooled, the true positive comes first again
    assert evaluate_results(results, "nocs").iou_ap_at(0.25)[4] == pytest.approx(100.0)
    # across images the later image's prediction comes first: a tied false positive then ranks first
    split = [_image([(5, gt, EXTENTS)], [(5, gt, EXTENTS, 0.5)]), _image([], [(5, far_away, EXTENTS, 0.5)])]
    assert evaluate_results(split, "nocs").iou_ap_at(0.25)[4] == pytest.approx(50.0)


def test_housecat6d_mode():
    base = _rotated([1, 0, 0], 15)
    spun = base @ _rotated([0, 1, 0], 45)
    results = [
        _image([(8, _pose(base), EXTENTS)], [(8, _pose(spun), EXTENTS, 0.9)], handles=[0]),  # glass: symmetric
        _image([(4, _pose(base), EXTENTS)], [(4, _pose(spun), EXTENTS, 0.9)], handles=[0]),  # cup: not, handles ignored
    ]
    metrics = evaluate_results(results, "housecat6d")
    document = metrics_to_json(metrics)
    assert list(document["classes"]) == HOUSECAT_CLASSES
    assert document["classes"]["glass"]["5deg2cm"] == 100.0
    assert document["classes"]["cup"]["10deg5cm"] == 0.0
    assert document["classes"]["cup"]["iou25"] == pytest.approx(100.0)
    assert document["mean"]["iou25"] == pytest.approx(20.0)  # 2 of 10 classes at 100
