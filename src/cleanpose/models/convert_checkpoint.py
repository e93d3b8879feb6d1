"""Convert between the reference CleanPose checkpoints and ours (docs/model.md §16a).

The reference (chrislin0621/CleanPose) saves a bare ``state_dict`` of its ``Net`` without the ``ULIP_model.*``
teacher: 750 keys with the DINOv2 backbone, 733 with PSP-ResNet18 (``cleanpose_state_dict_keys.tsv``), and
the confounder queue separately as a pickle (``tensor_list.pkl``: a list of C lists of Q tensors (1, 256),
possibly CUDA tensors and views into larger storages).

Everything here is a pure function from state dict to state dict, built from the ``reference_key_map()`` of
every module (the reference's short names live only in :data:`TOP_LEVEL_NAMES` and those maps):

* :func:`reference_key_table` — ``{our key: reference key}`` for a config,
* :func:`official_to_ours` / :func:`ours_to_official` — renaming with the strict consumption rule: every
  reference key is consumed or deliberately dropped (only the unused ResNet ``fc`` layer may be dropped,
  when our layout lacks it), unknown or missing keys and shape mismatches are errors,
* :func:`load_reference_queue` — the queue pickle as a dense (C, Q, 256) float32 CPU tensor,
* :func:`convert_official_checkpoint` / :func:`convert_to_official` — the two file conversions behind
  ``cleanpose convert-checkpoint``.
"""

from __future__ import annotations

import collections
import functools
import io
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from cleanpose.config import ModelConfig, config_from_dict
from cleanpose.errors import CheckpointError, ConfigError
from cleanpose.models import (
    backbones,
    feature_aggregator,
    front_door,
    keypoint_detector,
    nocs_predictor,
    point_encoder,
    pose_head,
    reconstructor,
)
from cleanpose.models.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from cleanpose.models.distillation import ResidualDistillationHead, map_keys
from cleanpose.models.net import CleanPoseNet
from cleanpose.models.state import format_keys, load_file, load_state_strict, unwrap_state_dict

logger = logging.getLogger(__name__)

__all__ = [
    "TOP_LEVEL_NAMES",
    "convert_official_checkpoint",
    "convert_to_official",
    "infer_reference_config",
    "load_official_model",
    "load_reference_queue",
    "load_reference_state_dict",
    "net_reference_key_map",
    "official_to_ours",
    "ours_to_official",
    "reference_key_table",
]

# Our top-level submodule -> (reference top-level name, module key map). The RGB branch is added per backbone.
TOP_LEVEL_NAMES: dict[str, tuple[str, Any]] = {
    "point_encoder": ("pts_extractor", point_encoder.reference_key_map),
    "keypoint_detector": ("IAKD", keypoint_detector.reference_key_map),
    "feature_aggregator": ("GAFA", feature_aggregator.reference_key_map),
    "front_door": ("FD_Encoder", front_door.reference_key_map),
    "nocs_predictor": ("nocs_predictor", nocs_predictor.reference_key_map),
    "reconstructor": ("reconstructor", reconstructor.reference_key_map),
    "pose_head": ("estimator", pose_head.reference_key_map),
}


def net_reference_key_map(rgb_backbone: str) -> list[tuple[str, str]]:
    """``(ours, reference)`` key-prefix pairs for the whole network (see ``models/attention.py``).

    Args:
        rgb_backbone: ``dino`` or ``resnet``.
    """
    pairs: list[tuple[str, str]] = []
    for ours, (reference, key_map) in TOP_LEVEL_NAMES.items():
        pairs += [(rf"{ours}\.{a}", rf"{reference}\.{b}") for a, b in key_map()]
        pairs.append((rf"{ours}\.", rf"{reference}\."))
    pairs += [(rf"rgb_encoder\.{a}", b) for a, b in backbones.RGB_BACKBONES[rgb_backbone].reference_key_map()]
    pairs += [(rf"distillation_head\.{a}", b) for a, b in ResidualDistillationHead.reference_key_map()]
    return pairs


@functools.lru_cache(maxsize=8)
def _skeleton(config: ModelConfig) -> dict[str, torch.Size]:
    """Our state-dict keys and shapes for ``config`` (built on the meta device: no memory, no init cost).

    Cached per config (configs are frozen); callers must not modify the returned dict.
    """
    with torch.device("meta"):
        model = CleanPoseNet(config, load_rgb_weights=False)
    return {key: value.shape for key, value in model.state_dict().items() if not key.startswith("queue.")}


def reference_key_table(config: ModelConfig) -> dict[str, str]:
    """``{our key: reference key}`` for every saved key of the network ``config`` describes (queue excluded)."""
    shapes = _skeleton(config)
    return map_keys(list(shapes), net_reference_key_map(config.rgb_backbone), to_reference=True)


def infer_reference_config(state: Mapping[str, torch.Tensor], *, queue_length: int | None = None) -> ModelConfig:
    """The camera_real config with ``rgb_backbone`` and ``cat_num`` read off a reference state dict.

    ``feature_mlp.0.weight`` present → ``dino``, absent → ``resnet``; ``cat_num`` = rows of
    ``nocs_predictor.atten_mlp.4.weight`` / (3 · 64).

    Raises:
        CheckpointError: the NOCS head's last layer is missing or its size is not a multiple of 3 · 64.
    """
    key = "nocs_predictor.atten_mlp.4.weight"
    if key not in state:
        raise CheckpointError(f"reference state dict lacks {key}; cannot infer cat_num (pass --config)")
    bins = ModelConfig().nocs_predictor.num_bins
    rows = state[key].shape[0]
    if rows % (3 * bins):
        raise CheckpointError(f"{key} has {rows} rows; expected a multiple of 3 x {bins} (cat_num x 3 x bins_num)")
    reference = {"rgb_backbone": "dino" if "feature_mlp.0.weight" in state else "resnet", "cat_num": rows // (3 * bins)}
    return ModelConfig.from_reference_yaml(reference, queue_length=queue_length)


def official_to_ours(
    state: Mapping[str, torch.Tensor], config: ModelConfig, *, source: str = "reference state dict"
) -> dict[str, torch.Tensor]:
    """Rename a reference state dict to ours, strictly.

    Args:
        state: the reference ``Net.state_dict()`` (no ``ULIP_model.*`` keys).
        config: the network it belongs to.
        source: name used in error messages.

    Returns:
        Our state dict (queue excluded), sharing the input tensors.

    Raises:
        CheckpointError: unknown reference keys, missing keys (reference names listed) or shape mismatches.
    """
    table = reference_key_table(config)
    shapes = _skeleton(config)
    expected = {reference: shapes[ours] for ours, reference in table.items()}
    droppable = [re.compile(pattern) for pattern in backbones.reference_dropped_keys(config.rgb_backbone)]
    dropped = [key for key in state if key not in expected and any(p.match(key) for p in droppable)]
    kept = {key: value for key, value in state.items() if key not in dropped}
    load_state_strict(
        kept,
        expected,
        source,
        target=f"the reference network (rgb_backbone={config.rgb_backbone}, cat_num={config.num_categories})",
        shapes="reference vs config",
        extra_word="unknown",
    )
    if dropped:
        logger.info("dropped %d unused reference keys: %s", len(dropped), format_keys(dropped))
    inverse = {reference: ours for ours, reference in table.items()}
    return {inverse[reference]: value for reference, value in kept.items()}


def ours_to_official(
    state: Mapping[str, torch.Tensor], config: ModelConfig, *, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename our state dict (queue keys ignored) to the reference's names, strictly.

    Keys our layout drops (the ResNet ``fc`` layer) are absent from the result; load it into the reference
    ``Net`` with ``strict=False`` in that case.

    Raises:
        CheckpointError: unknown or missing keys, or shape mismatches.
    """
    ours = {key: value for key, value in state.items() if not key.startswith("queue.")}
    load_state_strict(ours, _skeleton(config), source, shapes="state vs config", extra_word="unknown")
    table = reference_key_table(config)
    return {table[key]: value for key, value in ours.items()}


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def load_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a reference checkpoint: a bare state dict, or one under ``state_dict`` or ``model``.

    Raises:
        CheckpointError: missing or unreadable file, or no state dict in it.
    """
    return unwrap_state_dict(load_file(path, "reference checkpoint"), str(path))


class _QueueUnpickler(pickle.Unpickler):
    """Unpickles only tensors (and lists): storages are read with ``weights_only=True`` onto the CPU."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_to_cpu
        if (module, name) in {
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_tensor"),
            ("collections", "OrderedDict"),
        }:
            return getattr(torch._utils, name) if module == "torch._utils" else collections.OrderedDict
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a queue pickle")


def _storage_to_cpu(data: bytes):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_reference_queue(path: str | Path) -> torch.Tensor:
    """Read the reference ``tensor_list.pkl`` as a dense (C, Q, 256) float32 CPU tensor.

    Accepts entries of shape (1, 256) or (256,), CUDA tensors (remapped to the CPU) and views into larger
    storages (copied densely). Index q of row c is entry q of list c (oldest first). Only tensors, lists and
    tuples are unpickled; any other object in the file is refused.

    Raises:
        CheckpointError: unreadable file, not a list of lists of tensors, lists of unequal length, or entries
            of another size.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: queue pickle not found")
    try:
        with path.open("rb") as handle:
            queue = _QueueUnpickler(handle).load()
    except Exception as error:  # pickle and torch raise several types for foreign or corrupt files
        raise CheckpointError(f"{path}: cannot read the queue pickle ({error})") from error
    if not isinstance(queue, (list, tuple)) or not queue or not all(isinstance(row, (list, tuple)) for row in queue):
        raise CheckpointError(f"{path}: expected a list of per-category lists of tensors")
    lengths = sorted({len(row) for row in queue})
    if len(lengths) != 1 or lengths[0] == 0:
        raise CheckpointError(
            f"{path}: per-category lists have lengths {[len(row) for row in queue]}; "
            "expected one common non-zero length"
        )
    rows = []
    for c, row in enumerate(queue):
        entries = []
        for q, entry in enumerate(row):
            if not isinstance(entry, torch.Tensor) or entry.numel() != entry.shape[-1] or entry.dim() > 2:
                shape = tuple(entry.shape) if isinstance(entry, torch.Tensor) else type(entry).__name__
                raise CheckpointError(f"{path}: entry [{c}][{q}] is {shape}; expected a tensor of shape (1, D) or (D,)")
            entries.append(entry.detach().reshape(-1).to(torch.float32))
        widths = {entry.shape[0] for entry in entries}
        if len(widths) != 1:
            raise CheckpointError(f"{path}: category {c} mixes feature widths {sorted(widths)}")
        rows.append(torch.stack(entries))
    widths = {row.shape[1] for row in rows}
    if len(widths) != 1:
        raise CheckpointError(f"{path}: categories have feature widths {sorted(widths)}; expected one")
    return torch.stack(rows).contiguous()


def _reference_config(path: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, Mapping) or not isinstance(data.get("pose_net"), Mapping):
        raise ConfigError(f"{path}: no 'pose_net' section; expected a reference config (config/REAL/camera_real.yaml)")
    return dict(data["pose_net"]), str(path)


def load_official_model(
    in_path: str | Path, *, config_path: str | Path | None = None, queue_path: str | Path | None = None
) -> CleanPoseNet:
    """Build our network from a reference checkpoint (and optionally its queue pickle), in memory.

    Args:
        in_path: reference ``.pth`` (bare state dict, or under ``state_dict`` / ``model``).
        config_path: reference YAML whose ``pose_net`` section describes the network; None infers
            ``rgb_backbone`` and ``cat_num`` from the keys (camera_real defaults otherwise).
        queue_path: reference ``tensor_list.pkl``; None gives a network without queue.

    Returns:
        The converted network (eval mode, CPU).

    Raises:
        CheckpointError, ConfigError: see :func:`official_to_ours`, :func:`load_reference_queue`; a config that
            disagrees with the keys' shapes; a queue whose C differs from ``cat_num``.
    """
    state = load_reference_state_dict(in_path)
    queue = load_reference_queue(queue_path) if queue_path is not None else None
    queue_length = queue.shape[1] if queue is not None else None
    if config_path is not None:
        pose_net, name = _reference_config(config_path)
        config = ModelConfig.from_reference_yaml(pose_net, queue_length=queue_length, source=name)
    else:
        config = infer_reference_config(state, queue_length=queue_length)
    if queue is not None and (queue.shape[0] != config.num_categories or queue.shape[2] != config.front_door.model_dim):
        raise CheckpointError(
            f"{queue_path}: queue has {queue.shape[0]} categories of {queue.shape[2]}-d features; the network has "
            f"cat_num {config.num_categories} and feat_dim {config.front_door.model_dim}"
        )
    ours = official_to_ours(state, config, source=str(in_path))
    model = CleanPoseNet(config, load_rgb_weights=False)
    load_model_state(model, ours, queue, source=str(in_path))
    return model.eval()


def convert_official_checkpoint(
    in_path: str | Path,
    out_path: str | Path,
    *,
    config_path: str | Path | None = None,
    queue_path: str | Path | None = None,
) -> CleanPoseNet:
    """Convert a reference checkpoint (and optionally its queue pickle) into a cleanpose checkpoint.

    Arguments and errors as :func:`load_official_model`; ``out_path`` is the cleanpose checkpoint to write
    (without queue when ``queue_path`` is None). Returns the converted network (eval mode, CPU).
    """
    model = load_official_model(in_path, config_path=config_path, queue_path=queue_path)
    save_checkpoint(model, out_path)
    queue = tuple(model.queue.features.shape) if model.queue.is_filled else "none"
    logger.info("wrote %s (queue %s)", out_path, queue)
    return model


def convert_to_official(in_path: str | Path, out_path: str | Path, *, queue_path: str | Path | None = None) -> None:
    """Write a cleanpose checkpoint as a reference state dict (and its queue as a reference pickle).

    Args:
        in_path: cleanpose checkpoint.
        out_path: bare reference state dict to write.
        queue_path: where to write the queue as a list of C lists of (1, 256) CPU tensors; None skips it.

    Raises:
        CheckpointError: unreadable checkpoint, bad keys, or ``queue_path`` given for a checkpoint without queue.
    """
    checkpoint = read_checkpoint(in_path)
    try:
        config = config_from_dict(checkpoint["config"], ModelConfig, source=f"{in_path} [config]")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    torch.save(ours_to_official(checkpoint["model"], config, source=str(in_path)), Path(out_path))
    if queue_path is not None:
        queue = checkpoint["queue"]
        if queue is None:
            raise CheckpointError(f"{in_path}: checkpoint holds no queue; cannot write {queue_path}")
        entries = [[queue[c, q].reshape(1, -1).clone() for q in range(queue.shape[1])] for c in range(queue.shape[0])]
        with Path(queue_path).open("wb") as handle:
            pickle.dump(entries, handle)
