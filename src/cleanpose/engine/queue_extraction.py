"""The initial confounder queue (docs/data_formats.md §6, reference ``queue_extraction.py``).

Walks the training batches of epoch 0 in step order (CAMERA shard first, then REAL, as the reference
zips them), encodes each sample's raw, uncentred camera-frame points with the frozen ULIP
PointNet2-SSG teacher in eval mode (its 256-d feature before ``pc_projection``), and appends the
feature to its category's list while that list is short of ``queue_length``; stops once every list is
full. Differences from the reference, on purpose: every draw is seeded (the reference seeds nothing),
the output path is explicit, HouseCat6D works, and the file holds CPU tensors with a version.

Queue files are ``torch.save`` dicts ``{"format_version", "features": (C, Q, D) float32, "source"}``
(oldest entry first). `read_queue_file` also accepts the reference's ``tensor_list.pkl``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cleanpose.config import TrainConfig
from cleanpose.data.collate import concat_batches
from cleanpose.engine.batching import ShardedBatchSampler, step_generator
from cleanpose.errors import CheckpointError, DataFormatError
from cleanpose.fileio import atomic_writer
from cleanpose.models.convert_checkpoint import load_reference_queue
from cleanpose.models.distillation import PointNet2SSGTeacher, load_ulip_checkpoint
from cleanpose.models.state import load_file
from cleanpose.models.teacher_objective import reset_parameters
from cleanpose.models.weights import ULIP_POINTNET2_SSG, resolve_weights

logger = logging.getLogger(__name__)

QUEUE_FORMAT_VERSION = 1


def write_queue_file(path: str | Path, features: torch.Tensor, source: str) -> None:
    """Atomically save a (C, Q, D) queue."""
    with atomic_writer(path) as handle:
        torch.save(
            {
                "format_version": QUEUE_FORMAT_VERSION,
                "features": features.detach().cpu().float().contiguous(),
                "source": source,
            },
            handle,
        )


def read_queue_file(path: str | Path, expected_shape: tuple[int, int, int] | torch.Size) -> torch.Tensor:
    """Read a queue written by `write_queue_file` (or a reference ``.pkl`` list of lists).

    Args:
        path: the file.
        expected_shape: (C, Q, D) of the model's queue.

    Returns:
        (C, Q, D) float32 CPU tensor.

    Raises:
        CheckpointError: missing or unreadable file, another version, or a shape other than expected.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        features = load_reference_queue(path)
    else:
        content = load_file(path, "queue file", hint="write one with 'cleanpose queue'")
        if not isinstance(content, dict) or content.get("format_version") != QUEUE_FORMAT_VERSION:
            raise CheckpointError(f"{path}: not a cleanpose queue file of format_version {QUEUE_FORMAT_VERSION}")
        features = content["features"]
    if tuple(features.shape) != tuple(expected_shape):
        raise CheckpointError(
            f"{path}: queue has shape {tuple(features.shape)}; the model expects {tuple(expected_shape)} "
            "(categories, queue length, feature dim)"
        )
    return features.float()


def build_queue_teacher(checkpoint: str | None, seed: int) -> PointNet2SSGTeacher:
    """The frozen ULIP PointNet2-SSG encoder, with its official weights when a file is given, else with random
    weights drawn from ``seed`` (so a queue made without the file is the same on every run)."""
    teacher = PointNet2SSGTeacher(mode="eval")
    if checkpoint is None:
        logger.warning(
            "queue extraction without a ULIP PointNet2-SSG checkpoint: random-weight features seed the queue "
            "(training replaces them with the model's own features within a few dozen steps)"
        )
        reset_parameters(teacher, torch.Generator().manual_seed(seed))
    else:
        load_ulip_checkpoint(resolve_weights(ULIP_POINTNET2_SSG, checkpoint), teacher)
    return teacher.eval()


@torch.no_grad()
def extract_queue(
    config: TrainConfig, datasets, device: torch.device, *, teacher_checkpoint: str | None = None
) -> torch.Tensor:
    """Fill every category's list with teacher features of the first training samples of that category.

    Args:
        config: the training config (batch sizes, seed, queue length, category count).
        datasets: the training datasets, one per source, in batch order.
        device: where the teacher runs.
        teacher_checkpoint: official ULIP PointNet2-SSG checkpoint; None: random weights drawn from ``run.seed``.

    Returns:
        (C, Q, 256) float32 on the CPU, oldest (first seen) entry first.

    Raises:
        DataFormatError: a category never appears in a whole epoch of samples.
    """
    teacher = build_queue_teacher(teacher_checkpoint, config.run.seed).to(device)
    num_categories, length = config.model.num_categories, config.model.front_door.queue_length
    lists: list[list[torch.Tensor]] = [[] for _ in range(num_categories)]
    loaders = [
        iter(
            DataLoader(
                dataset,
                batch_sampler=ShardedBatchSampler(
                    len(dataset),
                    batch_size,
                    len(dataset) // batch_size,
                    seed=config.run.seed,
                    epoch=0,
                    stream=dataset.stream,
                ),
                num_workers=config.data.workers,
            )
        )
        for dataset, batch_size in zip(datasets, config.data.batch_sizes)
    ]
    for step in range(min(len(dataset) // size for dataset, size in zip(datasets, config.data.batch_sizes))):
        batch = concat_batches([next(loader) for loader in loaders])
        features = teacher(batch["pts"].to(device), step_generator(config.run.seed, 0, step, 0, device)).cpu()
        for category, feature in zip(batch["category_label"].reshape(-1).tolist(), features):
            if len(lists[category]) < length:
                lists[category].append(feature)
        if all(len(entries) == length for entries in lists):
            return torch.stack([torch.stack(entries) for entries in lists])
    short = {category: len(entries) for category, entries in enumerate(lists) if len(entries) < length}
    raise DataFormatError(
        f"{config.data.root}: a whole epoch gave too few samples for categories {short} "
        f"(need {length} each); the dataset lacks those categories"
    )
