"""Triton backend of :func:`~cleanpose.ops.ball_query` (one kernel launch, no float64 temporaries).

The PyTorch reference materialises every (centre, point) squared distance with an exact float64 FMA
emulation and a top-k over each row; on a GPU that is several passes over (B, M, N) buffers. Here one
program handles one ball: it streams the cloud in blocks, computes ``fma(dz, dz, fma(dy, dy, dx*dx))``
with ``dx = centre − point`` exactly as the compiled votenet kernel rounds it, keeps the points with
``d² < r²`` (``r²`` squared in float32) in index order, and fills the slots past the count with the first
hit (0 when the ball is empty), as the kernel does.

On CUDA tensors the kernel is compiled. CPU tensors need Triton's interpreter (``TRITON_INTERPRET=1``
before Triton is first imported; slow, for tests), which rounds ``tl.fma`` twice: only inputs whose
products are exact (dyadic coordinates) are bit-identical there.
"""

import torch
import triton
import triton.language as tl

from cleanpose.ops import check_triton_device

_BLOCK = 1024
"""Points streamed per iteration of a program."""


@triton.jit
def _ball_query_program(
    points_ptr, centers_ptr, out_ptr, num_points, num_centers, radius_squared,
    NUM_NEIGHBORS: tl.constexpr, SLOTS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """One ball: ``points_ptr`` (B, N, 3) and ``centers_ptr`` (B, M, 3) float32, ``out_ptr`` (B, M, S) int64."""
    row = tl.program_id(0).to(tl.int64)  # b * M + m
    cloud = row // num_centers
    center_x = tl.load(centers_ptr + row * 3)
    center_y = tl.load(centers_ptr + row * 3 + 1)
    center_z = tl.load(centers_ptr + row * 3 + 2)
    base = points_ptr + cloud * num_points * 3
    out = out_ptr + row * NUM_NEIGHBORS
    count = tl.zeros([], tl.int32)
    first = tl.full([], 2147483647, tl.int32)
    for start in range(0, num_points, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        valid = offsets < num_points
        dx = center_x - tl.load(base + offsets * 3, mask=valid, other=0.0)
        dy = center_y - tl.load(base + offsets * 3 + 1, mask=valid, other=0.0)
        dz = center_z - tl.load(base + offsets * 3 + 2, mask=valid, other=0.0)
        squared = tl.fma(dz, dz, tl.fma(dy, dy, dx * dx))
        inside = valid & (squared < radius_squared)
        slot = tl.cumsum(inside.to(tl.int32), axis=0) + count - 1
        tl.store(out + slot, offsets.to(tl.int64), mask=inside & (slot < NUM_NEIGHBORS))
        count += tl.sum(inside.to(tl.int32), axis=0)
        first = tl.minimum(first, tl.min(tl.where(inside, offsets, 2147483647), axis=0))
    first = tl.where(count > 0, first, 0)
    slots = tl.arange(0, SLOTS)
    tl.store(out + slots, tl.zeros([SLOTS], tl.int64) + first, mask=(slots >= count) & (slots < NUM_NEIGHBORS))


def ball_query_triton(radius: float, num_neighbors: int, points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Ball query of float32 clouds; same arguments and result as :func:`~cleanpose.ops.ball_query`.

    Raises:
        BackendUnavailableError: CPU tensors without Triton's interpreter.
    """
    check_triton_device("ball_query", points)
    batch_size, num_points, _ = points.shape
    num_centers = centers.shape[1]
    out = torch.empty(batch_size, num_centers, num_neighbors, dtype=torch.int64, device=points.device)
    if out.numel() == 0:
        return out
    radius_squared = float(torch.tensor(radius, dtype=torch.float32) ** 2)  # squared in float32, as the kernel
    block = min(_BLOCK, triton.next_power_of_2(num_points))
    _ball_query_program[(batch_size * num_centers,)](
        points.contiguous(), centers.contiguous(), out, num_points, num_centers, radius_squared,
        NUM_NEIGHBORS=num_neighbors, SLOTS=triton.next_power_of_2(num_neighbors), BLOCK=block,
        num_warps=max(1, min(8, block // 128)),
    )  # fmt: skip
    return out
