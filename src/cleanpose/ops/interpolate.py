"""Three-nearest-neighbour search and inverse-distance interpolation (PointNet++ feature propagation).

The feature-propagation step of PointNet++ carries features from a coarse set of "known" points to a
finer set of "unknown" points: each unknown point takes a weighted sum of the features of its three
nearest known points, with weights ``1 / (distance + 1e-8)`` normalised to sum to 1 (docs/model.md §2).
"""

from typing import NamedTuple

import torch

from cleanpose.ops import check_coordinates, select_backend
from cleanpose.ops.knn import kernel_squared_distances


class ThreeNN(NamedTuple):
    """Result of :func:`three_nn`."""

    dists: torch.Tensor
    """(B, n, 3) Euclidean distances (square root of the squared distance), ascending, metres."""
    idx: torch.Tensor
    """(B, n, 3) int64; ``idx[b, i, k] = j`` means that ``known[b, j]`` is the k-th nearest known point
    of ``unknown[b, i]``."""


# Pairs (unknown, known) handled at once; bounds the float64 temporaries of the exact FMA rounding.
_CHUNK_PAIRS = 1 << 22


def three_nn_reference(unknown: torch.Tensor, known: torch.Tensor) -> ThreeNN:
    """Pure-PyTorch :func:`three_nn` (same arguments and result; no input checks)."""
    batch_size, num_unknown, _ = unknown.shape
    chunk = max(1, _CHUNK_PAIRS // max(1, num_unknown * known.shape[1]))
    dists, idx = [], []
    with torch.no_grad():
        for start in range(0, batch_size, chunk):
            squared = kernel_squared_distances(unknown[start : start + chunk], known[start : start + chunk])
            # The kernel only accepts d < 1e40: NaN and inf distances never become neighbours.
            squared.nan_to_num_(nan=float("inf"), posinf=float("inf"))
            for _ in range(3):
                # argmin returns the first minimum, so equal distances go to the lower index first.
                best_idx = squared.argmin(dim=2, keepdim=True)
                best = squared.gather(2, best_idx)
                dists.append(best)
                idx.append(torch.where(torch.isfinite(best), best_idx, torch.zeros_like(best_idx)))
                squared.scatter_(2, best_idx, float("inf"))
        num_chunks = len(dists) // 3
        dists = torch.cat([torch.cat(dists[3 * i : 3 * i + 3], dim=2) for i in range(num_chunks)], dim=0)
        idx = torch.cat([torch.cat(idx[3 * i : 3 * i + 3], dim=2) for i in range(num_chunks)], dim=0)
        return ThreeNN(torch.sqrt(dists), idx)


def inverse_distance_weights(dists: torch.Tensor) -> torch.Tensor:
    """Interpolation weights of PointNet++ feature propagation.

    ``w_k = r_k / ((r_0 + r_1) + r_2)`` with ``r_k = 1 / (dists_k + 1e-8)``, the reference's
    ``dist_recip / dist_recip.sum(dim=2)``.

    Args:
        dists: (B, n, 3) float, metres; the distances returned by :func:`three_nn`.

    Returns:
        (B, n, 3) float, the same dtype; each row sums to 1 (up to rounding).

    Raises:
        ValueError: ``dists`` is not (B, n, 3).
    """
    if dists.dim() != 3 or dists.shape[2] != 3:
        raise ValueError(f"inverse_distance_weights: dists has shape {tuple(dists.shape)}; expected (B, n, 3)")
    reciprocal = 1.0 / (dists + 1e-8)
    norm = (reciprocal[..., 0:1] + reciprocal[..., 1:2]) + reciprocal[..., 2:3]
    return reciprocal / norm


def three_interpolate_reference(features: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch :func:`three_interpolate` (same arguments and result; no input checks)."""
    batch_size, channels, _ = features.shape
    num_unknown = idx.shape[1]
    flat = idx.long().reshape(batch_size, 1, num_unknown * 3).expand(batch_size, channels, -1)
    neighbours = torch.gather(features, 2, flat).reshape(batch_size, channels, num_unknown, 3)
    weight = weight.unsqueeze(1)  # (B, 1, n, 3)
    terms = neighbours * weight
    return (terms[..., 0] + terms[..., 1]) + terms[..., 2]


def _three_nn_triton(unknown: torch.Tensor, known: torch.Tensor) -> ThreeNN:
    """The Triton kernel for float32 clouds of at most ``MAX_KNOWN`` known points, else the reference."""
    if unknown.dtype != torch.float32 or known.shape[1] > interpolate_triton.MAX_KNOWN:
        return three_nn_reference(unknown, known)
    squared, idx = interpolate_triton.three_nn_squared_triton(unknown, known)
    return ThreeNN(torch.sqrt(squared), idx)


_NN_BACKENDS = {"reference": three_nn_reference}
try:
    from cleanpose.ops import interpolate_triton
except ImportError:  # a PyTorch build without Triton: the reference backend only
    pass
else:
    _NN_BACKENDS["triton"] = _three_nn_triton
_INTERPOLATE_BACKENDS = {"reference": three_interpolate_reference}


def three_nn(unknown: torch.Tensor, known: torch.Tensor, *, backend: str = "auto") -> ThreeNN:
    """Three nearest known points of every unknown point.

    Squared distances are rounded as the compiled reference kernel rounds them
    (:func:`~cleanpose.ops.knn.kernel_squared_distances`); the three smallest are returned in ascending
    order, equal distances going to the lower index first. When ``known`` has fewer than three points
    (or distances are not finite) the missing slots hold distance ``inf`` and index 0, as in the
    reference kernel.

    Args:
        unknown: (B, n, 3) float32 query coordinates, metres.
        known: (B, m, 3) coordinates of the points carrying features, same frame, dtype and device.
        backend: ``"auto"`` (the Triton kernel on CUDA when Triton is installed, else the reference),
            ``"reference"`` or ``"triton"`` (float32 with m <= 4,096, else the reference; CPU tensors need
            ``TRITON_INTERPRET=1``).

    Returns:
        :class:`ThreeNN` ``(dists, idx)``, both (B, n, 3); ``dists`` is the square root of the squared
        distance (no gradient), ``idx`` int64 indexes the point axis of ``known``.

    Raises:
        ValueError: wrong shapes, mismatched batch sizes or dtypes, or an empty ``known``.
        BackendUnavailableError: unknown ``backend``.
    """
    check_coordinates("three_nn", "unknown", unknown)
    check_coordinates("three_nn", "known", known)
    if unknown.shape[0] != known.shape[0]:
        raise ValueError(
            f"three_nn: unknown has shape {tuple(unknown.shape)} and known {tuple(known.shape)}; "
            "expected the same batch size"
        )
    if unknown.dtype != known.dtype:
        raise ValueError(f"three_nn: unknown has dtype {unknown.dtype} and known {known.dtype}; expected equal")
    if known.shape[1] < 1:
        raise ValueError(f"three_nn: known has shape {tuple(known.shape)}; expected at least one point")
    impl = select_backend("three_nn", _NN_BACKENDS, backend, unknown)
    return impl(unknown, known)


def three_interpolate(
    features: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Weighted sum of the features of three neighbours.

    ``out[b, c, i] = (f0 * w0 + f1 * w1) + f2 * w2`` with ``fk = features[b, c, idx[b, i, k]]`` and
    ``wk = weight[b, i, k]``. Differentiable in ``features`` and ``weight`` (the reference kernel gives
    ``weight`` no gradient; in the network the weights depend only on coordinates, which need none).

    Args:
        features: (B, C, m) float, features of the known points.
        idx: (B, n, 3) int64 (int32 accepted), values in [0, m); e.g. ``three_nn(...).idx``.
        weight: (B, n, 3) float, same dtype as ``features``; e.g. ``inverse_distance_weights(dists)``.
        backend: ``"auto"`` or ``"reference"``.

    Returns:
        (B, C, n), dtype of ``features``: the interpolated features of the n unknown points.

    Raises:
        ValueError: wrong shapes, batch sizes or dtypes.
        RuntimeError: an index outside [0, m) (raised by ``torch.gather``).
        BackendUnavailableError: unknown ``backend``.
    """
    if features.dim() != 3:
        raise ValueError(f"three_interpolate: features has shape {tuple(features.shape)}; expected (B, C, m)")
    if idx.dim() != 3 or idx.shape[2] != 3 or idx.shape[0] != features.shape[0]:
        raise ValueError(
            f"three_interpolate: idx has shape {tuple(idx.shape)} for features {tuple(features.shape)}; "
            "expected (B, n, 3)"
        )
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"three_interpolate: idx has dtype {idx.dtype}; expected int64 (or int32)")
    if weight.shape != idx.shape:
        raise ValueError(
            f"three_interpolate: weight has shape {tuple(weight.shape)}; expected {tuple(idx.shape)} like idx"
        )
    if weight.dtype != features.dtype:
        raise ValueError(
            f"three_interpolate: weight has dtype {weight.dtype} and features {features.dtype}; expected equal"
        )
    impl = select_backend("three_interpolate", _INTERPOLATE_BACKENDS, backend, features)
    return impl(features, idx, weight)
