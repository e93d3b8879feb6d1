"""Testing: run a checkpoint over a test set, write per-image result pickles, score them.

The result pickles have exactly the keys of the reference ``test_func`` (data_formats.md §4.4), so
`cleanpose evaluate` and the official evaluation code read them alike. Differences from the reference,
on purpose: images are processed in sorted order and each output is named after its source file
(pitfall P4); an image without usable detections gets a result with zero predictions instead of being
replaced by another image (P5); the confounder-queue draw of image i uses a legacy RandomState keyed by
(seed, i), so results do not depend on the order or number of images run before.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cleanpose.data.rng import legacy_random_state
from cleanpose.fileio import atomic_writer, ensure_writable_folder
from cleanpose.metrics import Metrics, evaluate_results, write_report
from cleanpose.models.net import CleanPoseNet

logger = logging.getLogger(__name__)

_GROUND_TRUTH_KEYS = ("gt_class_ids", "gt_bboxes", "gt_RTs", "gt_scales", "gt_handle_visibility")


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


@torch.no_grad()
def predict_dataset(model: CleanPoseNet, dataset, out_dir: str | Path, *, device: torch.device, seed: int, quiet: bool = False) -> list[dict]:
    """Run the model over every test image; write ``out_dir/<result_name>`` pickles; return the results.

    Args:
        model: the network (put in eval mode here).
        dataset: a `NocsTestDataset` or `HouseCat6DTestDataset`.
        out_dir: folder of the result pickles (created).
        device: where the model runs.
        seed: key of the per-image queue draws.
        quiet: no progress bar.
    """
    from tqdm import tqdm

    out_dir = ensure_writable_folder(out_dir)
    model.eval()
    results = []
    loader = DataLoader(dataset, batch_size=None, num_workers=0)
    for item in tqdm(loader, desc="test", unit="image", disable=quiet):
        outputs = None
        if item["pts"].shape[0] > 0:
            batch = {key: item[key].to(device) for key in ("rgb", "pts", "choose", "category_label")}
            random_state = legacy_random_state([seed, int(item["index"])])
            outputs = model(batch, queue_random_state=random_state)
        result = pose_result(item, outputs)
        target = out_dir / item["result_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(target) as handle:
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
        results.append(result)
    skipped = {reason: count for reason, count in dataset.skips.counts().items() if count}
    if skipped:
        logger.warning("test set skips: %s", skipped)
    return results


def evaluate_and_report(results: list[dict], dataset_name: str, out_dir: str | Path) -> Metrics:
    """Official metrics of `results` written to `out_dir` (metrics.json, .csv, .md, curves)."""
    metrics = evaluate_results(results, dataset_name)
    write_report(metrics, out_dir)
    return metrics
