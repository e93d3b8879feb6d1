"""The official NOCS / HouseCat6D pose metrics over a result set (docs/metrics.md §6–§8).

The costly part is per pair and done once, vectorized over every (prediction, gt) pair of the same
image and class: both IoUs and both pose errors. Matching then runs for all thresholds at once, on
groups padded to a common size, and the APs are a few cumulative sums per class.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cleanpose.metrics.argsort import SMALL_QUICKSORT, TIE_ORDERS, TieOrder, descending_order
from cleanpose.metrics.average_precision import voc_average_precision
from cleanpose.metrics.datasets import DatasetSpec, get_dataset
from cleanpose.metrics.iou import axis_aligned_iou, nocs_iou
from cleanpose.metrics.matching import match_by_iou, match_by_pose
from cleanpose.metrics.pose_error import official_rotation_error_deg, translation_error_cm
from cleanpose.metrics.results_io import ResultArrays, collect_results

logger = logging.getLogger(__name__)

__all__ = [
    "DEGREE_CURVE_THRESHOLDS",
    "HEADLINE_IOU_KEYS",
    "HEADLINE_POSE_KEYS",
    "IOU_THRESHOLDS",
    "Matches",
    "Metrics",
    "POSE_GATE_IOU",
    "POSE_THRESHOLDS",
    "SHIFT_CURVE_THRESHOLDS_CM",
    "average_precisions",
    "evaluate_arrays",
    "evaluate_results",
    "match_arrays",
]

IOU_THRESHOLDS = np.arange(101) / 100
"""(101,) IoU thresholds 0.00, 0.01, …, 1.00 (``i/100`` is exactly the literal 0.25, 0.1, …)."""
POSE_GATE_IOU = 0.1
"""Official-IoU threshold a pair must pass to enter the pose metric (docs/metrics.md §6.2)."""
HEADLINE_IOU_KEYS = {"iou25": 0.25, "iou50": 0.5, "iou75": 0.75}
"""metrics.json key → IoU threshold."""
HEADLINE_POSE_KEYS = {"5deg2cm": (5.0, 2.0), "5deg5cm": (5.0, 5.0), "10deg2cm": (10.0, 2.0), "10deg5cm": (10.0, 5.0)}
"""metrics.json key → (degrees, cm)."""
DEGREE_CURVE_THRESHOLDS = np.arange(61, dtype=np.float64)
"""(61,) degrees 0..60 of the AP-vs-degrees curve (no translation limit: 100 cm)."""
SHIFT_CURVE_THRESHOLDS_CM = np.arange(31) / 2
"""(31,) centimetres 0, 0.5, …, 15 of the AP-vs-cm curve (no rotation limit: 360°)."""
POSE_THRESHOLDS = np.concatenate(
    [
        np.array(list(HEADLINE_POSE_KEYS.values())),
        np.stack([DEGREE_CURVE_THRESHOLDS, np.full(61, 100.0)], axis=1),
        np.stack([np.full(31, 360.0), SHIFT_CURVE_THRESHOLDS_CM], axis=1),
    ]
)
"""(96, 2) rows (degrees, cm) evaluated: the headline pairs, then both curves."""


@dataclass(frozen=True)
class Metrics:
    """APs of one result set, per class and threshold, in percent; NaN marks an undefined AP.

    An IoU AP is NaN for a class with predictions but no gt anywhere; a mean is NaN when any class is.
    """

    dataset: str
    """``"nocs"`` or ``"housecat6d"``."""
    class_names: tuple[str, ...]
    """K class names, in id order (id k is row k − 1)."""
    iou_thresholds: np.ndarray
    """(T,) IoU thresholds, fractions."""
    iou_ap: np.ndarray
    """(K, T) float64 AP × 100 with the official NOCS IoU (§4.2)."""
    axis_aligned_iou_ap: np.ndarray
    """(K, T) float64 AP × 100 with the axis-aligned IoU (§4.4)."""
    pose_thresholds: np.ndarray
    """(Tp, 2) rows (degrees, cm), limits inclusive."""
    pose_ap: np.ndarray
    """(K, Tp) float64 AP × 100 of the pose metric (gated at official IoU > 0.1)."""
    num_images: int
    """Images evaluated (those with at least one gt or prediction)."""
    num_gts: int
    """Gt instances over all images."""
    num_predictions: int
    """Predictions over all images."""
    tie_order: str = "reference"
    """How equal values were ordered (``cleanpose.metrics.argsort.TIE_ORDERS``)."""

    def iou_ap_at(self, threshold: float, *, axis_aligned: bool = False) -> np.ndarray:
        """(K,) AP × 100 at one IoU threshold of ``iou_thresholds``."""
        column = _index_of(self.iou_thresholds, threshold, "IoU threshold")
        return (self.axis_aligned_iou_ap if axis_aligned else self.iou_ap)[:, column]

    def pose_ap_at(self, degrees: float, cm: float) -> np.ndarray:
        """(K,) AP × 100 at one (degrees, cm) row of ``pose_thresholds``."""
        return self.pose_ap[:, _pose_row(self.pose_thresholds, degrees, cm)]

    def degree_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(degrees (D,), ap (K, D))``: AP × 100 vs the rotation limit, no translation limit."""
        rows = self.pose_thresholds[:, 1] == 100.0
        return self.pose_thresholds[rows, 0], self.pose_ap[:, rows]

    def shift_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(cm (S,), ap (K, S))``: AP × 100 vs the translation limit, no rotation limit."""
        rows = self.pose_thresholds[:, 0] == 360.0
        return self.pose_thresholds[rows, 1], self.pose_ap[:, rows]

    def headline(self) -> dict[str, dict[str, np.ndarray]]:
        """Headline APs: ``{"classes": {key: (K,)}, "mean": {key: float}, "axis_aligned_classes": ...,
        "axis_aligned_mean": ...}`` with the keys of ``HEADLINE_IOU_KEYS`` and ``HEADLINE_POSE_KEYS``."""
        classes = {key: self.iou_ap_at(value) for key, value in HEADLINE_IOU_KEYS.items()}
        classes.update({key: self.pose_ap_at(*value) for key, value in HEADLINE_POSE_KEYS.items()})
        axis_aligned = {key: self.iou_ap_at(value, axis_aligned=True) for key, value in HEADLINE_IOU_KEYS.items()}
        return {
            "classes": classes,
            "mean": {key: float(np.mean(value)) for key, value in classes.items()},
            "axis_aligned_classes": axis_aligned,
            "axis_aligned_mean": {key: float(np.mean(value)) for key, value in axis_aligned.items()},
        }


def _index_of(values: np.ndarray, value: float, what: str) -> int:
    matches = np.flatnonzero(values == value)
    if len(matches) == 0:
        raise ValueError(f"{what} {value} was not evaluated")
    return int(matches[0])


def evaluate_results(
    results: Sequence[dict],
    dataset: str = "nocs",
    *,
    origins: Sequence[str] | None = None,
    tie_order: TieOrder = "reference",
) -> Metrics:
    """Score a result set with the official metrics of ``dataset`` (docs/metrics.md).

    Args:
        results: one result dict per image (keys in ``cleanpose.metrics.results_io``), in image order.
        dataset: ``"nocs"`` (CAMERA25 / REAL275) or ``"housecat6d"``.
        origins: per dict, a name used in error messages (``load_results`` gives them).
        tie_order: how equal scores, IoUs and pose errors are ordered (docs/metrics.md §6.3): ``"reference"``
            as the official code's ``np.argsort`` (NumPy's generic introsort, the same on every machine),
            or ``"stable"`` (descending: among equal values the later one first).
    Returns:
        ``Metrics`` with APs at every threshold of ``IOU_THRESHOLDS`` and ``POSE_THRESHOLDS``.
    Raises:
        DataFormatError: a dict breaks the input contract (the message names dict, key, instance).
    """
    spec = get_dataset(dataset)
    return evaluate_arrays(collect_results(results, spec, origins), spec, tie_order=tie_order)


def evaluate_arrays(arrays: ResultArrays, dataset: str | DatasetSpec, *, tie_order: TieOrder = "reference") -> Metrics:
    """``evaluate_results`` on an already checked, flattened result set."""
    spec = dataset if isinstance(dataset, DatasetSpec) else get_dataset(dataset)
    matches = match_arrays(arrays, spec, tie_order=tie_order)
    iou_ap, aa_ap, pose_ap = average_precisions(matches, tie_order)
    return Metrics(
        dataset=spec.name,
        class_names=spec.class_names,
        iou_thresholds=IOU_THRESHOLDS.copy(),
        iou_ap=iou_ap * 100,
        axis_aligned_iou_ap=aa_ap * 100,
        pose_thresholds=POSE_THRESHOLDS.copy(),
        pose_ap=pose_ap * 100,
        num_images=len(arrays.origins),
        num_gts=len(matches.gt_class),
        num_predictions=len(matches.pred_class),
        tie_order=tie_order,
    )


@dataclass(frozen=True)
class Matches:
    """The matching outcome of every prediction and gt of a result set: what the APs are computed from.

    Predictions are in the reference's pooled order (by class, then image, then the per-image processing
    order), gts by class, then image, then stored order. Images are indices into ``ResultArrays.origins``.
    """

    num_classes: int
    pred_class: np.ndarray
    """(m,) int64 class id, 1-based (non-decreasing)."""
    pred_image: np.ndarray
    """(m,) int64 image of each prediction."""
    pred_score: np.ndarray
    """(m,) float64 detection score."""
    iou: np.ndarray
    """(T, m) bool, matched with the official IoU at each threshold of ``iou_thresholds``."""
    axis_aligned: np.ndarray
    """(T, m) bool, matched with the axis-aligned IoU."""
    pose: np.ndarray
    """(Tp, m) bool, pose-matched at each row of ``pose_thresholds``."""
    pose_kept: np.ndarray
    """(m,) bool, the prediction passed the IoU gate (τ = 0.1) and takes part in the pose APs."""
    gt_class: np.ndarray
    """(n,) int64 class id (non-decreasing)."""
    gt_image: np.ndarray
    """(n,) int64 image of each gt."""
    gt_kept: np.ndarray
    """(n,) bool, the gt passed the IoU gate and counts in the pose recall."""
    iou_thresholds: np.ndarray
    """(T,) IoU thresholds of the rows of ``iou`` and ``axis_aligned``."""
    pose_thresholds: np.ndarray
    """(Tp, 2) (degrees, cm) of the rows of ``pose``."""

    def select(self, iou_thresholds: Sequence[float], pose_thresholds: Sequence[tuple[float, float]]) -> Matches:
        """The same matches restricted to some thresholds (each must have been evaluated)."""
        iou_rows = [_index_of(self.iou_thresholds, value, "IoU threshold") for value in iou_thresholds]
        pose_rows = [_pose_row(self.pose_thresholds, *pair) for pair in pose_thresholds]
        return dataclasses.replace(
            self,
            iou=self.iou[iou_rows],
            axis_aligned=self.axis_aligned[iou_rows],
            pose=self.pose[pose_rows],
            iou_thresholds=self.iou_thresholds[iou_rows],
            pose_thresholds=self.pose_thresholds[pose_rows],
        )

    def take_images(self, images: np.ndarray) -> Matches:
        """The matches of the result set made of ``images`` in this order (repeats allowed, e.g. a bootstrap
        resample): matching is per image, so only the pooling changes. Image ``images[k]`` becomes image k."""
        images = np.asarray(images, dtype=np.int64)
        num_images = 1 + int(
            max(self.pred_image.max(initial=-1), self.gt_image.max(initial=-1), images.max(initial=-1))
        )
        pred_rows, pred_image = _rows_of_images(self.pred_class, self.pred_image, images, self.num_classes, num_images)
        gt_rows, gt_image = _rows_of_images(self.gt_class, self.gt_image, images, self.num_classes, num_images)
        return dataclasses.replace(
            self,
            pred_class=self.pred_class[pred_rows],
            pred_image=pred_image,
            pred_score=self.pred_score[pred_rows],
            iou=self.iou[:, pred_rows],
            axis_aligned=self.axis_aligned[:, pred_rows],
            pose=self.pose[:, pred_rows],
            pose_kept=self.pose_kept[pred_rows],
            gt_class=self.gt_class[gt_rows],
            gt_image=gt_image,
            gt_kept=self.gt_kept[gt_rows],
        )


def _pose_row(pose_thresholds: np.ndarray, degrees: float, cm: float) -> int:
    matches = np.flatnonzero((pose_thresholds[:, 0] == degrees) & (pose_thresholds[:, 1] == cm))
    if len(matches) == 0:
        raise ValueError(f"pose threshold ({degrees}°, {cm} cm) was not evaluated")
    return int(matches[0])


def _rows_of_images(
    classes: np.ndarray, image_of_row: np.ndarray, images: np.ndarray, num_classes: int, num_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (sorted by class, then image) of the sequence ``images``, by class then sequence position; and
    each row's position in the sequence."""
    counts = np.bincount(classes * num_images + image_of_row, minlength=(num_classes + 1) * num_images)
    starts = (np.cumsum(counts) - counts).reshape(num_classes + 1, num_images)[:, images].reshape(-1)
    lengths = counts.reshape(num_classes + 1, num_images)[:, images].reshape(-1)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.repeat(np.tile(np.arange(len(images)), num_classes + 1), lengths)
    return np.repeat(starts, lengths) + offsets, positions


def match_arrays(arrays: ResultArrays, dataset: str | DatasetSpec, *, tie_order: TieOrder = "reference") -> Matches:
    """Match every image and class of a result set at every threshold (docs/metrics.md §6)."""
    if tie_order not in TIE_ORDERS:
        raise ValueError(f"tie_order must be one of {TIE_ORDERS}; got {tie_order!r}")
    spec = dataset if isinstance(dataset, DatasetSpec) else get_dataset(dataset)
    layout = _GroupLayout(arrays, spec.num_classes, tie_order)
    pairs = _pair_errors(arrays, layout, spec)
    gate = _index_of(IOU_THRESHOLDS, POSE_GATE_IOU, "IoU threshold")

    iou_pred = np.zeros((len(IOU_THRESHOLDS), layout.num_preds), dtype=bool)
    aa_pred = np.zeros_like(iou_pred)
    pose_pred = np.zeros((len(POSE_THRESHOLDS), layout.num_preds), dtype=bool)
    pose_gt_kept = np.zeros(layout.num_gts, dtype=bool)
    for bucket in layout.buckets():
        dense = bucket.densify(pairs)
        valid = bucket.pred_valid, bucket.gt_valid
        pred_matched, gt_matched = match_by_iou(dense["iou"], *valid, IOU_THRESHOLDS, tie_order)
        aa_matched, _ = match_by_iou(dense["aa_iou"], *valid, IOU_THRESHOLDS, tie_order)
        pred_kept, gt_kept = pred_matched[:, gate], gt_matched[:, gate]
        pose_matched, _ = match_by_pose(
            dense["rotation"], dense["translation"], pred_kept, gt_kept, POSE_THRESHOLDS, tie_order
        )
        iou_pred[:, bucket.preds] = pred_matched[bucket.pred_local, :, bucket.pred_slot].T
        aa_pred[:, bucket.preds] = aa_matched[bucket.pred_local, :, bucket.pred_slot].T
        pose_pred[:, bucket.preds] = pose_matched[bucket.pred_local, :, bucket.pred_slot].T
        pose_gt_kept[bucket.gts] = gt_kept[bucket.gt_local, bucket.gt_slot]
    return Matches(
        num_classes=spec.num_classes,
        pred_class=layout.pred_class,
        pred_image=arrays.pred_image[layout.pred_source],
        pred_score=layout.pred_score,
        iou=iou_pred,
        axis_aligned=aa_pred,
        pose=pose_pred,
        pose_kept=iou_pred[gate].copy(),
        gt_class=layout.gt_class,
        gt_image=arrays.gt_image[layout.gt_source],
        gt_kept=pose_gt_kept,
        iou_thresholds=IOU_THRESHOLDS.copy(),
        pose_thresholds=POSE_THRESHOLDS.copy(),
    )


def average_precisions(
    matches: Matches, tie_order: TieOrder = "reference"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, the VOC APs (fractions) of pooled matches (docs/metrics.md §7).

    Returns:
        ``(iou_ap (K, T), axis_aligned_ap (K, T), pose_ap (K, Tp))`` for the thresholds of ``matches``.
    """
    num_classes = matches.num_classes
    iou_ap = np.zeros((num_classes, len(matches.iou)))
    aa_ap = np.zeros_like(iou_ap)
    pose_ap = np.zeros((num_classes, len(matches.pose)))
    gt_per_class = np.bincount(matches.gt_class, minlength=num_classes + 1)
    kept_gt_per_class = np.bincount(matches.gt_class[matches.gt_kept], minlength=num_classes + 1)
    class_bounds = np.searchsorted(matches.pred_class, np.arange(1, num_classes + 2))
    for class_id in range(1, num_classes + 1):
        rows = slice(class_bounds[class_id - 1], class_bounds[class_id])
        scores = matches.pred_score[rows]
        iou_ap[class_id - 1] = voc_average_precision(matches.iou[:, rows], scores, gt_per_class[class_id], tie_order)
        aa_ap[class_id - 1] = voc_average_precision(
            matches.axis_aligned[:, rows], scores, gt_per_class[class_id], tie_order
        )
        kept = matches.pose_kept[rows]
        pose_ap[class_id - 1] = voc_average_precision(
            matches.pose[:, rows][:, kept], scores[kept], kept_gt_per_class[class_id], tie_order
        )
    return iou_ap, aa_ap, pose_ap


class _GroupLayout:
    """Instances sorted into (class, image) groups; predictions in processing order inside a group.

    Sorting groups by class first makes each class's predictions one contiguous run, in the pooled
    order of the reference (image order, then per-image score order).
    """

    def __init__(self, arrays: ResultArrays, num_classes: int, tie_order: TieOrder):
        num_images = max(len(arrays.origins), 1)
        gt_key = (arrays.gt_class - 1) * num_images + arrays.gt_image
        pred_key = (arrays.pred_class - 1) * num_images + arrays.pred_image
        keys = np.unique(np.concatenate([gt_key, pred_key]))
        gt_group = np.searchsorted(keys, gt_key)
        pred_group = np.searchsorted(keys, pred_key)
        # score descending; equal scores: the later stored prediction first (docs/metrics.md §6.3) ...
        pred_order = np.lexsort((-arrays.pred_instance, -arrays.pred_score, pred_group))
        if tie_order == "reference":  # ... which is the reference's order in groups of up to 16
            _reorder_large_groups(pred_order, pred_group, arrays.pred_score)
        gt_order = np.lexsort((arrays.gt_instance, gt_group))
        self.num_groups = len(keys)
        self.num_preds, self.num_gts = len(pred_order), len(gt_order)
        self.pred_source, self.gt_source = pred_order, gt_order
        self.pred_group, self.gt_group = pred_group[pred_order], gt_group[gt_order]
        self.pred_class, self.gt_class = arrays.pred_class[pred_order], arrays.gt_class[gt_order]
        self.pred_score = arrays.pred_score[pred_order]
        self.preds_per_group = np.bincount(self.pred_group, minlength=self.num_groups)
        self.gts_per_group = np.bincount(self.gt_group, minlength=self.num_groups)
        self.pred_start = np.cumsum(self.preds_per_group) - self.preds_per_group
        self.gt_start = np.cumsum(self.gts_per_group) - self.gts_per_group
        self.pred_slot = np.arange(self.num_preds) - self.pred_start[self.pred_group]
        self.gt_slot = np.arange(self.num_gts) - self.gt_start[self.gt_group]
        # every (prediction, gt) pair of a group, predictions in processing order
        gts_of_pred = self.gts_per_group[self.pred_group]
        self.pair_pred = np.repeat(np.arange(self.num_preds), gts_of_pred)
        within = np.arange(len(self.pair_pred)) - np.repeat(np.cumsum(gts_of_pred) - gts_of_pred, gts_of_pred)
        self.pair_gt = self.gt_start[self.pred_group[self.pair_pred]] + within

    def buckets(self):
        """Groups with predictions and gts, bucketed by (P, G) rounded up to powers of two."""
        active = np.flatnonzero((self.preds_per_group > 0) & (self.gts_per_group > 0))
        sizes = np.stack(
            [_next_power_of_two(self.preds_per_group[active]), _next_power_of_two(self.gts_per_group[active])], axis=1
        )
        unique_sizes, bucket_of_group = np.unique(sizes, axis=0, return_inverse=True)
        for bucket, (num_pred_slots, num_gt_slots) in enumerate(unique_sizes):
            groups = active[bucket_of_group.reshape(-1) == bucket]
            yield _Bucket(self, groups, int(num_pred_slots), int(num_gt_slots))


def _reorder_large_groups(pred_order: np.ndarray, pred_group: np.ndarray, scores: np.ndarray) -> None:
    """In place: the predictions of each group of more than 16 in the reference's score order.

    Args:
        pred_order: (m,) prediction rows sorted by group id, then processing order; rewritten per large group.
        pred_group: (m,) group id of each prediction row (the rows of a group are in stored order).
        scores: (m,) score of each prediction row.
    """
    sizes = np.bincount(pred_group)
    starts = np.cumsum(sizes) - sizes
    for group in np.flatnonzero(sizes > SMALL_QUICKSORT + 1):
        segment = slice(starts[group], starts[group] + sizes[group])
        rows = np.sort(pred_order[segment])  # stored order
        pred_order[segment] = rows[descending_order(scores[rows], "reference")]


def _next_power_of_two(counts: np.ndarray) -> np.ndarray:
    return np.where(counts <= 1, 1, 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64))


class _Bucket:
    """Dense (k, P, G) view of k groups; slot (p, g) is prediction p and gt g of the group."""

    def __init__(self, layout: _GroupLayout, groups: np.ndarray, num_pred_slots: int, num_gt_slots: int):
        local = np.full(layout.num_groups, -1)
        local[groups] = np.arange(len(groups))
        self.shape = (len(groups), num_pred_slots, num_gt_slots)
        self.preds = np.flatnonzero(local[layout.pred_group] >= 0)
        self.gts = np.flatnonzero(local[layout.gt_group] >= 0)
        self.pred_local, self.pred_slot = local[layout.pred_group[self.preds]], layout.pred_slot[self.preds]
        self.gt_local, self.gt_slot = local[layout.gt_group[self.gts]], layout.gt_slot[self.gts]
        self.pred_valid = np.arange(num_pred_slots)[None, :] < layout.preds_per_group[groups][:, None]
        self.gt_valid = np.arange(num_gt_slots)[None, :] < layout.gts_per_group[groups][:, None]
        pair_local = local[layout.pred_group[layout.pair_pred]]
        self.pairs = np.flatnonzero(pair_local >= 0)
        self.pair_index = (
            pair_local[self.pairs],
            layout.pred_slot[layout.pair_pred[self.pairs]],
            layout.gt_slot[layout.pair_gt[self.pairs]],
        )

    def densify(self, pair_values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dense = {}
        for name, values in pair_values.items():
            array = np.zeros(self.shape, dtype=values.dtype)
            array[self.pair_index] = values[self.pairs]
            dense[name] = array
        return dense


def _pair_errors(arrays: ResultArrays, layout: _GroupLayout, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Both IoUs (rounded to float32, §4.5) and both pose errors of every pair of ``layout``."""
    pred_rows = layout.pred_source[layout.pair_pred]
    gt_rows = layout.gt_source[layout.pair_gt]
    pair_class = arrays.gt_class[gt_rows]
    handle_less = ~arrays.gt_handle_visible[gt_rows]

    def in_classes(names) -> np.ndarray:
        ids = [spec.class_names.index(name) + 1 for name in names if name in spec.class_names]
        return np.isin(pair_class, ids)

    pred_pose, gt_pose = arrays.pred_pose[pred_rows], arrays.gt_pose[gt_rows]
    pred_extents, gt_extents = arrays.pred_extents[pred_rows], arrays.gt_extents[gt_rows]
    iou_symmetric = in_classes(spec.iou_symmetric)
    rotation_symmetric = in_classes(spec.rotation_symmetric)
    if spec.handle_class is not None:
        iou_symmetric |= in_classes([spec.handle_class]) & handle_less
        rotation_symmetric |= in_classes([spec.handle_class]) & handle_less
    aa_symmetric = in_classes(spec.axis_aligned_symmetric)
    return {
        "iou": nocs_iou(pred_pose, pred_extents, gt_pose, gt_extents, iou_symmetric).astype(np.float32),
        "aa_iou": axis_aligned_iou(pred_pose, pred_extents, gt_pose, gt_extents, aa_symmetric).astype(np.float32),
        "rotation": official_rotation_error_deg(pred_pose, gt_pose, rotation_symmetric),
        "translation": translation_error_cm(pred_pose, gt_pose),
    }
