"""Ball query with the semantics of the votenet CUDA kernel (docs/model.md §2)."""

import torch

from cleanpose.ops import check_coordinates, select_backend
from cleanpose.ops.knn import kernel_squared_distances

# Pairs (centre, point) handled at once; bounds the float64 temporaries of the exact FMA rounding.
_CHUNK_PAIRS = 1 << 22


def ball_query_reference(
    radius: float, num_neighbors: int, points: torch.Tensor, centers: torch.Tensor
) -> torch.Tensor:
    """Pure-PyTorch ball query, vectorised over centres and processed in batch chunks.

    Same arguments and result as :func:`ball_query` (which checks the inputs).
    """
    batch_size, num_points, _ = points.shape
    num_centers = centers.shape[1]
    chunk = max(1, _CHUNK_PAIRS // max(1, num_centers * num_points))
    with torch.no_grad():
        radius_t = torch.tensor(radius, dtype=points.dtype, device=points.device)
        radius_squared = radius_t * radius_t  # the kernel squares the radius in float32
        key_dtype = torch.int16 if num_points < 2**15 else torch.int32
        index = torch.arange(num_points, dtype=key_dtype, device=points.device)
        outside = torch.tensor(num_points, dtype=key_dtype, device=points.device)
        taken = min(num_neighbors, num_points)
        parts = []
        for start in range(0, batch_size, chunk):
            squared = kernel_squared_distances(centers[start : start + chunk], points[start : start + chunk])
            # The first S inside points in index order are the S smallest of (index if inside else N).
            key = torch.where(squared < radius_squared, index, outside)
            del squared
            parts.append(torch.topk(key, taken, dim=2, largest=False, sorted=True).values.long())
        grouped = torch.cat(parts, dim=0)
        sentinel = num_points
        if taken < num_neighbors:
            padding = grouped.new_full((batch_size, num_centers, num_neighbors - taken), sentinel)
            grouped = torch.cat([grouped, padding], dim=2)
        first = grouped[..., :1]
        first = torch.where(first == sentinel, torch.zeros_like(first), first)
        return torch.where(grouped == sentinel, first, grouped)


def _ball_query_triton(radius: float, num_neighbors: int, points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """The Triton kernel for float32 clouds, else the reference."""
    if points.dtype != torch.float32:
        return ball_query_reference(radius, num_neighbors, points, centers)
    return ball_query_triton.ball_query_triton(radius, num_neighbors, points, centers)


_BACKENDS = {"reference": ball_query_reference}
try:
    from cleanpose.ops import ball_query_triton
except ImportError:  # a PyTorch build without Triton: the reference backend only
    pass
else:
    _BACKENDS["triton"] = _ball_query_triton


def ball_query(
    radius: float, num_neighbors: int, points: torch.Tensor, centers: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Indices of the first ``num_neighbors`` points inside a ball around each centre.

    For each centre the points are scanned in index order and the first S with squared distance
    ``d2 < radius*radius`` are kept (strict; the radius is squared in the points' dtype, as the kernel
    does in float32; ``d2`` is rounded as the compiled kernel rounds it, see
    :func:`~cleanpose.ops.knn.kernel_squared_distances`). Slots past the number found are filled with the first index
    found; a centre with no point inside gets a row of zeros.

    Args:
        radius: ball radius, metres.
        num_neighbors: S >= 1, slots per centre.
        points: (B, N, 3) float32 coordinates, metres.
        centers: (B, M, 3) coordinates of the ball centres, same frame, dtype and device as ``points``.
        backend: ``"auto"`` (the Triton kernel on CUDA when Triton is installed, else the reference),
            ``"reference"`` (PyTorch, any device) or ``"triton"`` (one launch; float32, other dtypes fall back
            to the reference; CPU tensors need ``TRITON_INTERPRET=1``).

    Returns:
        (B, M, S) int64. ``idx[b, m, s] = j`` means that ``points[b, j]`` is the s-th point (in index
        order) inside the ball around ``centers[b, m]``, or a repeat of the first one (padding).

    Raises:
        ValueError: wrong shapes, mismatched batch sizes or dtypes, ``num_neighbors < 1``,
            or a negative ``radius``.
        BackendUnavailableError: unknown ``backend``.
    """
    check_coordinates("ball_query", "points", points)
    check_coordinates("ball_query", "centers", centers)
    if centers.shape[0] != points.shape[0]:
        raise ValueError(
            f"ball_query: centers has shape {tuple(centers.shape)} and points {tuple(points.shape)}; "
            "expected the same batch size"
        )
    if centers.dtype != points.dtype:
        raise ValueError(f"ball_query: centers has dtype {centers.dtype} and points {points.dtype}; expected equal")
    if num_neighbors < 1:
        raise ValueError(f"ball_query: num_neighbors is {num_neighbors}; expected >= 1")
    if radius < 0:
        raise ValueError(f"ball_query: radius is {radius}; expected >= 0")
    impl = select_backend("ball_query", _BACKENDS, backend, points)
    return impl(float(radius), int(num_neighbors), points, centers)
