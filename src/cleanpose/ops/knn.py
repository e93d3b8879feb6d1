"""k-nearest-neighbour search between two point sets (used by the PointBERT teacher's grouping)."""

from typing import NamedTuple

import torch

from cleanpose.ops import check_coordinates, fused_multiply_add, select_backend

DISTANCE_FORMS = ("direct", "expanded")


class KNN(NamedTuple):
    """Result of :func:`knn_points`."""

    dists: torch.Tensor
    """(B, M, K) squared distances, metres², ascending along K (in the requested distance form)."""
    idx: torch.Tensor
    """(B, M, K) int64; ``idx[b, i, k] = j`` means that ``points[b, j]`` is the k-th nearest point of
    ``query[b, i]``."""


def squared_distances(query: torch.Tensor, points: torch.Tensor, distance: str = "direct") -> torch.Tensor:
    """All squared distances between ``query`` (B, M, 3) and ``points`` (B, N, 3) as (B, M, N).

    ``"direct"`` is ``(dx*dx + dy*dy) + dz*dz``. ``"expanded"`` is the matrix-product form of the
    PointBERT teacher (``square_distance`` in the reference's ``dvae.py``):
    ``(-2 * query @ points^T + sum(query**2)) + sum(points**2)``; it can be slightly negative and
    orders near-ties differently from the direct form. Differentiable; without autograd the direct
    form works in place (same rounding, no extra (B, M, N) buffers). Computed in the inputs' dtype also
    under autocast (a bfloat16 matrix product would reorder the neighbours).
    """
    if distance == "direct":
        dx = query[..., 0].unsqueeze(2) - points[..., 0].unsqueeze(1)
        dy = query[..., 1].unsqueeze(2) - points[..., 1].unsqueeze(1)
        dz = query[..., 2].unsqueeze(2) - points[..., 2].unsqueeze(1)
        if torch.is_grad_enabled() and (query.requires_grad or points.requires_grad):
            return (dx * dx + dy * dy) + dz * dz
        return dx.mul_(dx).add_(dy.mul_(dy)).add_(dz.mul_(dz))
    with torch.autocast(query.device.type, enabled=False):
        squared = -2 * torch.matmul(query, points.transpose(1, 2))
        squared = squared + torch.sum(query**2, -1).unsqueeze(2)
        return squared + torch.sum(points**2, -1).unsqueeze(1)


def kernel_squared_distances(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Squared distances (B, M, N) rounded exactly as the reference CUDA kernels compute them (no gradient).

    nvcc contracts ``(dx*dx + dy*dy) + dz*dz`` into ``fma(dz, dz, fma(dy, dy, dx*dx))`` (seen in the
    disassembly of the reference's ``_ext`` build, in FPS, ball query and three-NN alike); this uses
    :func:`~cleanpose.ops.fused_multiply_add` to round the same way, so threshold and arg-max decisions
    agree with the reference to the last bit. Memory: a few (B, M, N) float64 temporaries.

    Args:
        query: (B, M, 3) float32.
        points: (B, N, 3) float32.
    """
    with torch.no_grad():
        dx = query[..., 0].unsqueeze(2) - points[..., 0].unsqueeze(1)
        dy = query[..., 1].unsqueeze(2) - points[..., 1].unsqueeze(1)
        dz = query[..., 2].unsqueeze(2) - points[..., 2].unsqueeze(1)
        return fused_multiply_add(dz, dz, fused_multiply_add(dy, dy, dx * dx))


def smallest_k_by_value_then_index(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest entries along the last axis, ascending; ties go to the lower index.

    NaN sorts after everything. For float32 the value's order-preserving integer image and the index
    are packed into one int64 key, so a single ``topk`` gives a fully determined answer (a stable sort
    of the whole axis is several times slower on the CPU); other dtypes use the stable sort.

    Args:
        values: (..., N) float.
        k: 1 <= k <= N.

    Returns:
        (..., k) int64 indices into the last axis.
    """
    num = values.shape[-1]
    if values.dtype != torch.float32:
        return torch.sort(values, dim=-1, stable=True).indices[..., :k]
    bits = (values.detach() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0 (they compare equal)
    # Negative floats have the sign bit set; flipping their other bits makes int order equal float order.
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = bits.long().mul_(1 << 32).add_(torch.arange(num, device=values.device))
    return torch.topk(key, k, dim=-1, largest=False, sorted=True).values.bitwise_and_(0xFFFFFFFF)


def knn_points_reference(query: torch.Tensor, points: torch.Tensor, k: int, distance: str = "direct") -> KNN:
    """Pure-PyTorch :func:`knn_points` (same arguments and result; no input checks)."""
    squared = squared_distances(query, points, distance)
    order = smallest_k_by_value_then_index(squared, k)
    return KNN(torch.gather(squared, 2, order), order)


_BACKENDS = {"reference": knn_points_reference}


def knn_points(
    query: torch.Tensor, points: torch.Tensor, k: int, *, distance: str = "direct", backend: str = "auto"
) -> KNN:
    """The k nearest ``points`` of every ``query`` point.

    Returns the k smallest squared distances in ascending order; equal distances go to the lower index
    first (the reference teacher uses ``topk(sorted=False)``, whose order is unspecified; downstream
    everything is max-pooled, so only the chosen set matters).

    Args:
        query: (B, M, 3) float32 coordinates, metres.
        points: (B, N, 3) coordinates, same frame, dtype and device.
        k: 1 <= K <= N, neighbours per query point.
        distance: ``"direct"`` for ``(dx*dx + dy*dy) + dz*dz``, or ``"expanded"`` for the
            matrix-product form ``‖q‖² + ‖p‖² − 2 q·p`` that the PointBERT teacher uses
            (docs/model.md §11), whose rounding can reorder near-ties.
        backend: ``"auto"`` or ``"reference"``.

    Returns:
        :class:`KNN` ``(dists, idx)``, both (B, M, K). ``dists`` are squared distances in the chosen
        form, differentiable in ``query`` and ``points``; ``idx`` is int64 into the point axis of
        ``points``.

    Raises:
        ValueError: wrong shapes, batch sizes or dtypes, ``k`` outside [1, N], or an unknown ``distance``.
        BackendUnavailableError: unknown ``backend``.
    """
    check_coordinates("knn_points", "query", query)
    check_coordinates("knn_points", "points", points)
    if query.shape[0] != points.shape[0]:
        raise ValueError(
            f"knn_points: query has shape {tuple(query.shape)} and points {tuple(points.shape)}; "
            "expected the same batch size"
        )
    if query.dtype != points.dtype:
        raise ValueError(f"knn_points: query has dtype {query.dtype} and points {points.dtype}; expected equal")
    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"knn_points: k is {k} for points of shape {tuple(points.shape)}; expected 1 <= k <= N")
    if distance not in DISTANCE_FORMS:
        raise ValueError(f"knn_points: distance is {distance!r}; valid values: {', '.join(DISTANCE_FORMS)}")
    impl = select_backend("knn_points", _BACKENDS, backend, query)
    return impl(query, points, int(k), distance)
