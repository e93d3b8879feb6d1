"""Triton backend of :func:`~cleanpose.ops.three_nn` (one kernel launch, no float64 temporaries).

One program per unknown point holds every known point of its cloud in registers (clouds of at most
``MAX_KNOWN`` known points; larger ones stay on the reference), computes ``fma(dz, dz, fma(dy, dy, dx*dx))``
with ``dx = unknown − known`` as the compiled votenet kernel rounds it, and takes the three smallest in
ascending order, equal distances to the lower index (NaN counts as ``inf``; a slot with no finite distance
keeps index 0), as :func:`~cleanpose.ops.interpolate.three_nn_reference` does.

CPU tensors need Triton's interpreter (``TRITON_INTERPRET=1`` before Triton is imported; for tests), which
rounds ``tl.fma`` twice: only dyadic coordinates are bit-identical there.
"""

import torch
import triton
import triton.language as tl

from cleanpose.ops import check_triton_device

MAX_KNOWN = 4096
"""Known points per cloud held in registers by one program."""


@triton.jit
def _three_nn_program(unknown_ptr, known_ptr, squared_ptr, idx_ptr, num_unknown, num_known, BLOCK: tl.constexpr):
    """One unknown point: writes its three smallest squared distances (3,) float32 and indices (3,) int64."""
    row = tl.program_id(0).to(tl.int64)  # b * n + i
    cloud = row // num_unknown
    x = tl.load(unknown_ptr + row * 3)
    y = tl.load(unknown_ptr + row * 3 + 1)
    z = tl.load(unknown_ptr + row * 3 + 2)
    offsets = tl.arange(0, BLOCK)
    valid = offsets < num_known
    base = known_ptr + cloud * num_known * 3
    dx = x - tl.load(base + offsets * 3, mask=valid, other=0.0)
    dy = y - tl.load(base + offsets * 3 + 1, mask=valid, other=0.0)
    dz = z - tl.load(base + offsets * 3 + 2, mask=valid, other=0.0)
    squared = tl.fma(dz, dz, tl.fma(dy, dy, dx * dx))
    squared = tl.where(valid & (squared == squared), squared, float("inf"))  # NaN and padding: inf
    for slot in tl.static_range(3):
        best = tl.min(squared, axis=0)
        best_idx = tl.min(tl.where(squared == best, offsets, BLOCK), axis=0)  # the lowest index of the minimum
        tl.store(squared_ptr + row * 3 + slot, best)
        tl.store(idx_ptr + row * 3 + slot, tl.where(best < float("inf"), best_idx, 0).to(tl.int64))
        squared = tl.where(offsets == best_idx, float("inf"), squared)


def three_nn_squared_triton(unknown: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Three smallest squared distances (B, n, 3) float32 and their indices (B, n, 3) int64.

    Args:
        unknown: (B, n, 3) float32.
        known: (B, m, 3) float32, 1 <= m <= ``MAX_KNOWN``.

    Raises:
        BackendUnavailableError: CPU tensors without Triton's interpreter.
    """
    check_triton_device("three_nn", unknown)
    batch_size, num_unknown, _ = unknown.shape
    squared = torch.empty(batch_size, num_unknown, 3, dtype=torch.float32, device=unknown.device)
    idx = torch.empty(batch_size, num_unknown, 3, dtype=torch.int64, device=unknown.device)
    if squared.numel() == 0:
        return squared, idx
    block = triton.next_power_of_2(known.shape[1])
    _three_nn_program[(batch_size * num_unknown,)](
        unknown.contiguous(), known.contiguous(), squared, idx, num_unknown, known.shape[1],
        BLOCK=block, num_warps=max(1, min(8, block // 128)),
    )  # fmt: skip
    return squared, idx
