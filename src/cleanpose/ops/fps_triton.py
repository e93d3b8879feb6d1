"""Triton backend of :func:`~cleanpose.ops.furthest_point_sample` (one kernel launch, no host syncs).

The pure-PyTorch loop of :mod:`cleanpose.ops.fps` launches a few dozen kernels per pick; on a GPU
that loop dominated the training step (about 90 % of it on an H200). This kernel runs the whole
loop inside one program per cloud, with every point's coordinates and running distance held in
registers, and makes exactly the reference kernel's decisions: ``fma(dz, dz, fma(dy, dy, dx*dx))``
distances, the inclusive ``1e-3`` skip rule compared in double precision, ``fminf`` updates and the
thread-tree tie order (given as a per-point priority, :func:`~cleanpose.ops.fps.tie_priority`).

On CUDA tensors the kernel is compiled. CPU tensors need Triton's interpreter, which must be switched
on before Triton is first imported (``TRITON_INTERPRET=1``; slow, for tests). The interpreter rounds
``tl.fma`` twice (a product then a sum), so only inputs whose products are exact (e.g. dyadic
coordinates) give bit-identical picks there.
"""

import torch
import triton
import triton.language as tl

from cleanpose.ops import check_triton_device

# Clouds with more points than this stay on the PyTorch backend (registers per program).
MAX_POINTS = 1 << 14


@triton.jit
def _fps_program(points_ptr, priority_ptr, out_ptr, num_points, num_samples, no_priority, BLOCK: tl.constexpr):
    """One cloud: ``points_ptr`` (N, 3) float32 contiguous, ``out_ptr`` (M,) int64 picks."""
    cloud = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < num_points
    base = points_ptr + cloud * num_points * 3
    x = tl.load(base + offsets * 3, mask=inside, other=0.0)
    y = tl.load(base + offsets * 3 + 1, mask=inside, other=0.0)
    z = tl.load(base + offsets * 3 + 2, mask=inside, other=0.0)
    norm = tl.fma(z, z, tl.fma(y, y, x * x))
    eligible = inside & (norm.to(tl.float64) > 1e-3)
    priority = tl.load(priority_ptr + offsets, mask=inside, other=no_priority)
    temp = tl.full([BLOCK], 1e10, tl.float32)
    out = out_ptr + cloud * num_samples
    tl.store(out, tl.zeros([], tl.int64))
    last = tl.zeros([], tl.int64)
    for step in range(1, num_samples):
        dx = x - tl.load(base + last * 3)
        dy = y - tl.load(base + last * 3 + 1)
        dz = z - tl.load(base + last * 3 + 2)
        dist = tl.fma(dz, dz, tl.fma(dy, dy, dx * dx))
        temp = tl.where(dist < temp, dist, temp)  # fminf: a NaN distance keeps the old value
        candidates = tl.where(eligible, temp, -1.0)
        best = tl.max(candidates, axis=0)
        winner = tl.argmin(tl.where(candidates == best, priority, no_priority), axis=0)
        last = tl.where(best < 0, 0, winner).to(tl.int64)  # no eligible point: every thread reports 0
        tl.store(out + step, last)


def furthest_point_sample_triton(points: torch.Tensor, num_samples: int, priority: torch.Tensor) -> torch.Tensor:
    """Furthest point sampling of float32 ``points`` (B, N, 3), N <= ``MAX_POINTS``.

    Args:
        points: (B, N, 3) float32 coordinates, metres.
        num_samples: M >= 0.
        priority: (N,) int32 tie priority of every point (smaller wins among equal distances).

    Returns:
        (B, M) int64 picks, as :func:`~cleanpose.ops.furthest_point_sample`.

    Raises:
        BackendUnavailableError: CPU tensors without Triton's interpreter.
    """
    check_triton_device("furthest_point_sample", points)
    batch_size, num_points, _ = points.shape
    samples = torch.zeros(batch_size, num_samples, dtype=torch.int64, device=points.device)
    if num_samples <= 1 or batch_size == 0:
        return samples
    block = triton.next_power_of_2(num_points)
    no_priority = num_points * 512
    _fps_program[(batch_size,)](
        points.contiguous(),
        priority.to(torch.int32),
        samples,
        num_points,
        num_samples,
        no_priority,
        BLOCK=block,
        num_warps=max(1, min(16, block // 256)),
    )
    return samples
