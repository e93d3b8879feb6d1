"""Gathering features at sampled points and grouping them by neighbourhood (docs/model.md §2).

Both ops are plain gathers along the point axis. Gradients flow to ``features`` through
``torch.gather`` (a scatter-add backward, as the reference kernels' ``*_grad`` do); indices get none.
"""

import torch

from cleanpose.ops import select_backend


def _check_features(op_name: str, features: torch.Tensor) -> None:
    if features.dim() != 3:
        raise ValueError(f"{op_name}: features has shape {tuple(features.shape)}; expected (B, C, N)")


def _check_index(op_name: str, idx: torch.Tensor, features: torch.Tensor, expected: str, dims: int) -> None:
    if idx.dim() != dims or idx.shape[0] != features.shape[0]:
        raise ValueError(
            f"{op_name}: idx has shape {tuple(idx.shape)} for features {tuple(features.shape)}; expected {expected}"
        )
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{op_name}: idx has dtype {idx.dtype}; expected int64 (or int32)")


def gather_points_reference(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch :func:`gather_points` (same arguments and result; no input checks)."""
    batch_size, channels, _ = features.shape
    expanded = idx.long().unsqueeze(1).expand(batch_size, channels, idx.shape[1])
    return torch.gather(features, 2, expanded)


def group_points_reference(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch :func:`group_points` (same arguments and result; no input checks)."""
    batch_size, channels, _ = features.shape
    _, num_centers, num_neighbors = idx.shape
    flat = idx.long().reshape(batch_size, 1, num_centers * num_neighbors).expand(batch_size, channels, -1)
    return torch.gather(features, 2, flat).reshape(batch_size, channels, num_centers, num_neighbors)


_GATHER_BACKENDS = {"reference": gather_points_reference}
_GROUP_BACKENDS = {"reference": group_points_reference}


def gather_points(features: torch.Tensor, idx: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Gather per-point features (or transposed coordinates) at the given point indices.

    Args:
        features: (B, C, N) float, any unit; channel-first features of N points.
        idx: (B, M) int64 (int32 accepted), values in [0, N); e.g. the output of furthest point sampling.
        backend: ``"auto"`` or ``"reference"``.

    Returns:
        (B, C, M), dtype of ``features``: ``out[b, c, i] = features[b, c, idx[b, i]]``.

    Raises:
        ValueError: wrong shapes, batch sizes or index dtype.
        RuntimeError: an index outside [0, N) (raised by ``torch.gather``; not checked up front, to
            avoid a device synchronisation per call).
        BackendUnavailableError: unknown ``backend``.
    """
    _check_features("gather_points", features)
    _check_index("gather_points", idx, features, "(B, M) with the batch size of features", 2)
    impl = select_backend("gather_points", _GATHER_BACKENDS, backend, features)
    return impl(features, idx)


def group_points(features: torch.Tensor, idx: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Group per-point features by neighbourhood.

    Args:
        features: (B, C, N) float, any unit; channel-first features of N points.
        idx: (B, M, S) int64 (int32 accepted), values in [0, N); e.g. the output of ball query:
            neighbourhood m of cloud b consists of the points ``idx[b, m, :]``.
        backend: ``"auto"`` or ``"reference"``.

    Returns:
        (B, C, M, S), dtype of ``features``: ``out[b, c, m, s] = features[b, c, idx[b, m, s]]``.

    Raises:
        ValueError: wrong shapes, batch sizes or index dtype.
        RuntimeError: an index outside [0, N) (raised by ``torch.gather``; not checked up front, to
            avoid a device synchronisation per call).
        BackendUnavailableError: unknown ``backend``.
    """
    _check_features("group_points", features)
    _check_index("group_points", idx, features, "(B, M, S) with the batch size of features", 3)
    impl = select_backend("group_points", _GROUP_BACKENDS, backend, features)
    return impl(features, idx)
