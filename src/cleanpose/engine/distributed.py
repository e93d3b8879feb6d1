"""A handful of data-parallel helpers (after detectron2's `utils/comm.py`).

Every function works without `torch.distributed` being initialised (one process = rank 0 of 1), so the
same training code runs under `torchrun` and as a plain process.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 writes checkpoints, logs and files."""
    return get_rank() == 0


def init_from_environment(device_type: str) -> torch.device:
    """Join the process group that `torchrun` describes in the environment, if any.

    Args:
        device_type: "cuda" (NCCL; one GPU per local rank) or "cpu" (gloo).

    Returns:
        The device this process computes on.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        logger.info("joined process group: rank %d of %d on %s", get_rank(), world_size, device)
    return device


def all_gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate, along dim 0 and in rank order, the same-shaped tensor from every rank.

    Args:
        tensor: (n, ...) with the same shape on every rank.

    Returns:
        (world_size * n, ...); the input itself without a process group. No gradient flows back.
    """
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor (a copy; the input is unchanged)."""
    if not is_distributed():
        return tensor.clone()
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / get_world_size()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()
