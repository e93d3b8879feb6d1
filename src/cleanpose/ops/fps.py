"""Furthest point sampling with the semantics of the votenet CUDA kernel (docs/model.md §2).

The reference network samples its set-abstraction centres (and the PointBERT teacher its group
centres) with the votenet variant of furthest point sampling. Three details of that kernel change
which points are picked, and all three are reproduced here:

1. The first pick is always point 0, whatever it is.
2. Points with ``x*x + y*y + z*z <= 1e-3`` (within about 3.16 cm of the origin; our clouds are
   centred, so this is the region around the object's centroid) are *skipped*: they are never
   candidates. Point 0 is still picked first even when it is such a point.
3. Ties between equal distances are broken by the kernel's thread layout (see
   :func:`furthest_point_sample`); this matters once every eligible point has been picked and
   the same points start to repeat.
"""

import functools
import math

import torch

from cleanpose.ops import check_coordinates, fused_multiply_add, select_backend

# Settings of the votenet kernel (`sampling_gpu.cu`, `cuda_utils.h`).
_MAX_THREADS = 512
_INITIAL_DISTANCE = 1e10
_SKIP_SQUARED_NORM = 1e-3


def kernel_num_threads(num_points: int) -> int:
    """Threads the votenet kernel launches for ``num_points`` points (``opt_n_threads``).

    This is ``min(512, 2**floor(log(n) / log(2)))`` with the logarithms taken in double precision,
    exactly as the kernel computes it.

    Args:
        num_points: number of input points, at least 1.

    Returns:
        The thread count T, a power of two in [1, 512].
    """
    power = int(math.log(float(num_points)) / math.log(2.0))
    return max(min(1 << power, _MAX_THREADS), 1)


@functools.lru_cache(maxsize=64)
def tie_priority(num_points: int, device: torch.device) -> torch.Tensor:
    """Rank of every point among equal maxima, as the kernel's reduction resolves them.

    Thread ``t`` scans ``t, t+T, ...`` keeping the first strict maximum, so within a thread the
    lowest row wins. The shared-memory tree then compares slots ``(s, s+h)`` for
    ``h = T/2, ..., 1`` keeping the left on ties; the last comparison (``h = 1``) decides on bit 0
    of the thread id, the one before on bit 1, and so on. Among threads holding the same maximum the
    one whose bit-reversed id is smallest therefore wins.

    Returns:
        (N,) int64, distinct values; among points with equal maximal distance the kernel returns
        the one with the smallest value. Cached per (N, device): callers must not modify it.
    """
    threads = kernel_num_threads(num_points)
    num_bits = threads.bit_length() - 1
    rows = (num_points + threads - 1) // threads
    point = torch.arange(num_points, device=device)
    thread = point % threads
    reversed_thread = torch.zeros_like(thread)
    for bit in range(num_bits):
        reversed_thread |= ((thread >> bit) & 1) << (num_bits - 1 - bit)
    return reversed_thread * rows + point // threads


def furthest_point_sample_reference(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Pure-PyTorch furthest point sampling, vectorised over the batch.

    Same arguments and result as :func:`furthest_point_sample` (which checks the inputs).
    """
    batch_size, num_points, _ = points.shape
    samples = torch.zeros(batch_size, num_samples, dtype=torch.int64, device=points.device)
    if num_samples <= 1:
        return samples
    with torch.no_grad():
        x, y, z = points.unbind(-1)
        # The kernel compares a float32 norm with the double literal 1e-3; do the same in double.
        skipped = fused_multiply_add(z, z, fused_multiply_add(y, y, x * x)).double() <= _SKIP_SQUARED_NORM
        priority = tie_priority(num_points, points.device)
        no_priority = priority.new_tensor(num_points * _MAX_THREADS)
        temp = torch.full((batch_size, num_points), _INITIAL_DISTANCE, dtype=points.dtype, device=points.device)
        batch = torch.arange(batch_size, device=points.device)
        last = samples[:, 0]
        for step in range(1, num_samples):
            diff = points - points[batch, last].unsqueeze(1)
            dx, dy, dz = diff.unbind(-1)
            # fmin keeps the old value when the distance is NaN, as CUDA's fminf does.
            temp = torch.fmin(fused_multiply_add(dz, dz, fused_multiply_add(dy, dy, dx * dx)), temp)
            candidates = temp.masked_fill(skipped, -1.0)
            best = candidates.max(dim=1, keepdim=True).values
            key = torch.where(candidates == best, priority, no_priority)
            last = key.argmin(dim=1)
            # With no eligible point every thread keeps its initial (best -1, index 0).
            last = torch.where(best.squeeze(1) < 0, torch.zeros_like(last), last)
            samples[:, step] = last
    return samples


def _furthest_point_sample_triton(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The Triton kernel for float32 clouds of at most ``fps_triton.MAX_POINTS`` points, else the reference."""
    if points.dtype != torch.float32 or points.shape[1] > fps_triton.MAX_POINTS:
        return furthest_point_sample_reference(points, num_samples)
    return fps_triton.furthest_point_sample_triton(points, num_samples, tie_priority(points.shape[1], points.device))


_BACKENDS = {"reference": furthest_point_sample_reference}
try:
    from cleanpose.ops import fps_triton
except ImportError:  # a PyTorch build without Triton: the reference backend only
    pass
else:
    _BACKENDS["triton"] = _furthest_point_sample_triton


def furthest_point_sample(points: torch.Tensor, num_samples: int, *, backend: str = "auto") -> torch.Tensor:
    """Iterative furthest point sampling with the votenet CUDA kernel's exact semantics.

    Starting from point 0, each step picks the eligible point whose distance to the set already
    picked is largest. Per point a running minimum ``temp`` (initially 1e10) of the squared distance
    to the picks is kept, rounded as the compiled kernel rounds it: ``fma(dz, dz, fma(dy, dy, dx*dx))``
    (:func:`~cleanpose.ops.fused_multiply_add`; the squared norm of the skip rule likewise).
    Points with ``x*x + y*y + z*z <= 1e-3``
    (about 3.16 cm from the origin) are never candidates (docs/model.md §2, Q8). Point 0 is always the
    first pick even if it is such a point.

    Ties follow the kernel: with ``T = kernel_num_threads(N)`` threads, thread ``t`` keeps the first
    strict maximum of ``t, t+T, t+2T, ...``, and the tree reduction keeps the left slot unless the
    right one is strictly greater. For generic data this is "the first maximum"; once every eligible
    point has been picked (all ``temp`` are 0) it decides which points repeat. With no eligible point
    at all, every later pick is 0.

    Args:
        points: (B, N, 3) float32 coordinates, metres, any frame (the skip rule refers to its origin).
            Other floating dtypes are accepted; the kernel's float32 results are matched for float32.
        num_samples: M >= 0, number of indices to return per cloud; M > N repeats points.
        backend: ``"auto"`` (the Triton kernel on CUDA when Triton is installed, else the reference),
            ``"reference"`` (PyTorch, any device) or ``"triton"`` (one kernel launch; float32 clouds of at
            most 16,384 points, others fall back to the reference; CPU tensors need ``TRITON_INTERPRET=1``).

    Returns:
        (B, M) int64. ``samples[b, i] = j`` means that the i-th pick of cloud b is ``points[b, j]``.
        ``samples[:, 0]`` is 0.

    Raises:
        ValueError: ``points`` is not (B, N, 3) floating with N >= 1, or ``num_samples`` < 0.
        BackendUnavailableError: unknown ``backend``.
    """
    check_coordinates("furthest_point_sample", "points", points)
    if points.shape[1] < 1:
        raise ValueError(f"furthest_point_sample: points has shape {tuple(points.shape)}; expected N >= 1 points")
    if num_samples < 0:
        raise ValueError(f"furthest_point_sample: num_samples is {num_samples}; expected >= 0")
    impl = select_backend("furthest_point_sample", _BACKENDS, backend, points)
    return impl(points, int(num_samples))
