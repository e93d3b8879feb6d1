"""Testing: run a checkpoint over a test set, write per-image result pickles, score them.

The result pickles have exactly the keys of the reference ``test_func`` (docs/data_formats.md §4.4), so
`cleanpose evaluate` and the official evaluation code read them alike. Differences from the reference,
on purpose: images are processed in sorted order and each output is named after its source file
(docs/data_formats.md P4); an image without usable detections gets a result with zero predictions instead of being
replaced by another image (P5); the confounder-queue draw of image i uses a legacy RandomState keyed by
(seed, i), so results do not depend on the order or number of images run before. The objects of
consecutive images run together (up to `OBJECTS_PER_FORWARD` per forward), each with its image's draw.
Training validation (`cleanpose.engine.hooks.ValidationHook`) runs the same `predict_items`.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cleanpose.data.rng import legacy_random_state
from cleanpose.fileio import atomic_writer, ensure_writable_folder
from cleanpose.metrics import Metrics, evaluate_results, save_results_npz, write_report
from cleanpose.models.net import CleanPoseNet

logger = logging.getLogger(__name__)

_GROUND_TRUTH_KEYS = ("gt_class_ids", "gt_bboxes", "gt_RTs", "gt_scales", "gt_handle_visibility")
_INPUT_KEYS = ("rgb", "pts", "choose", "category_label")
_POSE_KEYS = ("pred_rotation", "pred_translation", "pred_size")
OBJECTS_PER_FORWARD = 64
"""Objects of consecutive test images run in one forward (an image's objects are never split)."""


def evenly_spaced(count: int, limit: int) -> np.ndarray:
    """Indices ``floor(i·count/limit)``, i < limit: `limit` of `count` items spread evenly; all when limit is 0."""
    if limit == 0 or limit >= count:
        return np.arange(count)
    return np.arange(limit) * count // limit


def load_items(dataset, indices: Iterable[int], *, workers: int) -> list[dict]:
    """Items `indices` of a test dataset, read with `workers` processes and kept in ordinary memory."""
    subset = torch.utils.data.Subset(dataset, [int(index) for index in indices])
    loader = DataLoader(subset, batch_size=None, num_workers=min(workers, len(subset)))
    # clone: a tensor a worker sent lives in shared memory and holds a file descriptor while it lives
    return [{key: value.clone() if torch.is_tensor(value) else value for key, value in item.items()} for item in loader]


def pose_result(item: dict, outputs: dict[str, torch.Tensor] | None) -> dict:
    """The reference's per-image result dict from a test item and the network's eval outputs.

    ``pred_RTs[:, :3, :3] = R·‖s‖``, ``pred_RTs[:, :3, 3] = t`` (metres), ``pred_scales = s/‖s‖``,
    float32; an item with no kept detection (``outputs`` None) gets (0, 4, 4) and (0, 3) arrays. The extra
    key ``image_path`` (the frame relative to the data root; evaluators ignore it) serves `visualize`.
    """
    result = {key: np.asarray(item[key]) for key in _GROUND_TRUTH_KEYS if key in item}
    result.update(
        image_path=str(item["frame"]),
        pred_class_ids=np.asarray(item["pred_class_ids"]),
        pred_bboxes=np.asarray(item["pred_bboxes"]),
        pred_scores=np.asarray(item["pred_scores"]),
    )
    if outputs is None:
        result.update(pred_RTs=np.zeros((0, 4, 4), np.float32), pred_scales=np.zeros((0, 3), np.float32))
        return result
    size = outputs["pred_size"].double()
    scale = torch.linalg.vector_norm(size, dim=1, keepdim=True)
    poses = torch.eye(4, dtype=torch.float64).repeat(size.shape[0], 1, 1)
    poses[:, :3, :3] = outputs["pred_rotation"].double().cpu() * scale.cpu().unsqueeze(2)
    poses[:, :3, 3] = outputs["pred_translation"].double().cpu()
    result.update(pred_RTs=poses.float().numpy(), pred_scales=(size / scale).float().cpu().numpy())
    return result


def image_queue_draw(model: CleanPoseNet, seed: int, index: int) -> torch.Tensor:
    """(C, S) int64 queue draw of test image `index`: the reference draw from a RandomState keyed by (seed, index)."""
    return model.queue.sample_indices(model.config.front_door.num_queue_samples, legacy_random_state([seed, index]))


@torch.no_grad()
def predict_items(
    model: CleanPoseNet,
    items: Iterable[dict],
    *,
    device: torch.device,
    seed: int,
    objects_per_forward: int = OBJECTS_PER_FORWARD,
) -> Iterator[tuple[dict, dict]]:
    """Yield ``(item, result)`` for each test item, in order (the model must be in eval mode).

    Consecutive items are gathered until they hold `objects_per_forward` objects, then run in one
    forward; object b gets the queue draw of its own image (`image_queue_draw`), so each result is the
    one a forward of its image alone gives (up to float rounding of the batched kernels).

    Args:
        model: the network, in eval mode, on `device`.
        items: `NocsTestDataset` / `HouseCat6DTestDataset` items (CPU tensors).
        device: where the model runs.
        seed: key of the per-image queue draws.
        objects_per_forward: objects gathered before a forward runs.
    """
    group, count = [], 0
    for item in items:
        group.append(item)
        count += item["pts"].shape[0]
        if count >= objects_per_forward:
            yield from zip(group, _predict_group(model, group, device, seed))
            group, count = [], 0
    if group:
        yield from zip(group, _predict_group(model, group, device, seed))


def _predict_group(model: CleanPoseNet, items: list[dict], device: torch.device, seed: int) -> list[dict]:
    """`pose_result` of each item, the objects of all items run in one forward."""
    counts = [item["pts"].shape[0] for item in items]
    filled = [item for item, count in zip(items, counts) if count]
    if not filled:
        return [pose_result(item, None) for item in items]
    batch = {key: torch.cat([item[key] for item in filled]).to(device, non_blocking=True) for key in _INPUT_KEYS}
    queue_idx = None
    if model.config.use_front_door:
        draws = [image_queue_draw(model, seed, int(item["index"])) for item in filled]
        queue_idx = torch.cat([draw.expand(item["pts"].shape[0], -1, -1) for draw, item in zip(draws, filled)])
    outputs = model(batch, queue_idx=queue_idx)
    pieces = {key: outputs[key].float().cpu().split([count for count in counts if count]) for key in _POSE_KEYS}
    results, position = [], 0
    for item, count in zip(items, counts):
        own = None
        if count:
            own = {key: pieces[key][position] for key in _POSE_KEYS}
            position += 1
        results.append(pose_result(item, own))
    return results


@torch.no_grad()
def predict_dataset(
    model: CleanPoseNet,
    dataset,
    out_dir: str | Path,
    *,
    device: torch.device,
    seed: int,
    quiet: bool = False,
    objects_per_forward: int = OBJECTS_PER_FORWARD,
    archive: str | Path | None = None,
) -> list[dict]:
    """Run the model over every test image; write ``out_dir/<result_name>`` pickles; return the results.

    Args:
        model: the network (put in eval mode here).
        dataset: a `NocsTestDataset` or `HouseCat6DTestDataset`.
        out_dir: folder of the result pickles (created).
        device: where the model runs.
        seed: key of the per-image queue draws.
        quiet: no progress bar.
        objects_per_forward: see `predict_items`.
        archive: also write all results to this ``.npz`` archive (``metrics.save_results_npz``, read without
            pickle), each image named by its ``result_name``.
    """
    from tqdm import tqdm

    out_dir = ensure_writable_folder(out_dir)
    model.eval()
    results, names = [], []
    loader = DataLoader(dataset, batch_size=None, num_workers=0)
    items = tqdm(loader, desc="test", unit="image", disable=quiet)
    for item, result in predict_items(model, items, device=device, seed=seed, objects_per_forward=objects_per_forward):
        target = out_dir / item["result_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(target) as handle:
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
        results.append(result)
        names.append(str(item["result_name"]))
    if archive is not None:
        save_results_npz(results, archive, names)
    skipped = {reason: count for reason, count in dataset.skips.counts().items() if count}
    if skipped:
        logger.warning("test set skips: %s", skipped)
    return results


def evaluate_and_report(results: list[dict], dataset_name: str, out_dir: str | Path) -> Metrics:
    """Official metrics of `results` written to `out_dir` (metrics.json, .csv, .md, curves)."""
    metrics = evaluate_results(results, dataset_name)
    write_report(metrics, out_dir)
    return metrics
