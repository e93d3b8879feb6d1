"""Point operators: furthest point sampling, ball query, grouping, three-NN interpolation and kNN.

Each family lives in its own module (``fps``, ``ball_query``, ``grouping``, ``interpolate``, ``knn``)
and offers a pure-PyTorch reference implementation (``*_reference``) plus one public dispatch
function with a ``backend`` argument. ``backend="auto"`` picks a registered ``"triton"`` backend for
CUDA inputs (furthest point sampling has one: its PyTorch loop launches dozens of kernels per pick)
and ``"reference"`` otherwise; the reference runs everywhere.

Conventions shared by every op:

- Coordinates are (..., 3) float tensors in metres, in any one frame (the op is frame-agnostic).
- Indices are int64 and index the point axis of the tensor named in each docstring.
- Where a reference CUDA kernel makes a discrete decision on a squared distance (FPS arg-max and skip
  rule, ball-query radius test, three-NN order), the distance is rounded as the *compiled* kernel
  rounds it. docs/model.md §2 writes ``(dx*dx + dy*dy) + dz*dz``; nvcc's default ``-fmad=true`` turns that
  into ``fma(dz, dz, fma(dy, dy, dx*dx))`` (checked in the disassembly of the reference's build), and a
  one-ulp difference flips near-ties, so float32 inputs use an exact FMA emulation
  (:func:`fused_multiply_add`).
"""

import os
from collections.abc import Callable, Mapping

import torch

from cleanpose.errors import BackendUnavailableError


def select_backend(op_name: str, backends: Mapping[str, Callable], backend: str, tensor: torch.Tensor) -> Callable:
    """Return the implementation of ``op_name`` that ``backend`` names.

    Args:
        op_name: name of the public op, used in the error message.
        backends: registered implementations by name; ``"reference"`` must be present.
        backend: ``"auto"`` or one of the names in ``backends``.
        tensor: an input of the op; ``"auto"`` resolves to ``"triton"`` when that is registered and
            ``tensor`` is on a CUDA device, else to ``"reference"``.

    Returns:
        The callable registered under the resolved name.

    Raises:
        BackendUnavailableError: ``backend`` is neither ``"auto"`` nor a registered name.
    """
    if backend == "auto":
        return backends["triton" if tensor.is_cuda and "triton" in backends else "reference"]
    if backend not in backends:
        valid = ", ".join(["auto", *sorted(backends)])
        raise BackendUnavailableError(f"{op_name}: backend {backend!r} is not available; valid backends: {valid}")
    return backends[backend]


def check_coordinates(op_name: str, arg_name: str, tensor: torch.Tensor) -> None:
    """Raise ValueError unless ``tensor`` is a floating (B, N, 3) coordinate tensor.

    Args:
        op_name: name of the public op, used in the message.
        arg_name: name of the argument, used in the message.
        tensor: the argument to check.
    """
    if tensor.dim() != 3 or tensor.shape[2] != 3:
        raise ValueError(f"{op_name}: {arg_name} has shape {tuple(tensor.shape)}; expected (B, N, 3)")
    if not tensor.is_floating_point():
        raise ValueError(f"{op_name}: {arg_name} has dtype {tensor.dtype}; expected a floating dtype")


def check_triton_device(op_name: str, tensor: torch.Tensor) -> None:
    """Refuse a Triton backend call on CPU tensors unless Triton's interpreter is on.

    Raises:
        BackendUnavailableError: ``tensor`` is not on CUDA and ``TRITON_INTERPRET`` is not ``1``.
    """
    if not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise BackendUnavailableError(
            f"{op_name}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before Triton is "
            "imported); use backend 'reference' or 'auto'"
        )


def fused_multiply_add(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once, as a CUDA ``FFMA`` instruction computes it (no gradient).

    The reference kernels are built by nvcc with its default ``-fmad=true``: their disassembly shows
    every squared distance ``(dx*dx + dy*dy) + dz*dz`` computed as ``fma(dz, dz, fma(dy, dy, dx*dx))``.
    For float32 this is emulated exactly (for results in the float32 normal range): the product is
    exact in float64, and rounding the float64 sum to float32 differs from rounding the exact sum only
    when the float64 sum lies exactly halfway between two float32 numbers; there the sum's TwoSum error
    term decides. Other dtypes use ``a * b + c``.

    Args:
        a, b, c: broadcastable float tensors.

    Returns:
        The broadcast result, dtype of the inputs.
    """
    if not (a.dtype == b.dtype == c.dtype == torch.float32):
        return a * b + c
    with torch.no_grad():
        product = a.double() * b.double()  # exact: 24 + 24 significant bits
        addend = c.double().expand_as(product) if c.shape != product.shape else c.double()
        total = product + addend
        rounded = total.float()
        # Halfway: the 29 float64 mantissa bits below float32 precision are 1 followed by 28 zeros.
        halfway = (total.view(torch.int64) & 0x1FFFFFFF) == 0x10000000
        if total.is_cuda:  # no host sync: correct every element, keep the halfway ones
            return torch.where(halfway, _round_exact_sum(product, addend, total), rounded)
        if bool(halfway.any()):
            rounded[halfway] = _round_exact_sum(product[halfway], addend[halfway], total[halfway])
        return rounded


def _round_exact_sum(product: torch.Tensor, addend: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """float32 rounding of the exact ``product + addend`` where the float64 ``total`` lies halfway.

    The sum's TwoSum error term says on which side of ``total`` the exact value lies: nudging
    ``total`` one float64 step that way makes the float32 rounding single (ties stay ties-to-even).
    """
    virtual = total - product
    error = (product - (total - virtual)) + (addend - virtual)  # exact sum = total + error
    nudged = torch.nextafter(total, torch.where(error > 0, torch.inf, -torch.inf).double())
    return torch.where(error != 0, nudged.float(), total.float())


# The submodules import `select_backend`, `check_coordinates` and `fused_multiply_add` from this package,
# so they are defined above these imports.
from cleanpose.ops.ball_query import ball_query, ball_query_reference  # noqa: E402
from cleanpose.ops.fps import furthest_point_sample, furthest_point_sample_reference  # noqa: E402
from cleanpose.ops.grouping import (  # noqa: E402
    gather_points,
    gather_points_reference,
    group_points,
    group_points_reference,
)
from cleanpose.ops.interpolate import (  # noqa: E402
    ThreeNN,
    inverse_distance_weights,
    three_interpolate,
    three_interpolate_reference,
    three_nn,
    three_nn_reference,
)
from cleanpose.ops.knn import KNN, knn_points, knn_points_reference  # noqa: E402

__all__ = [
    "KNN",
    "ThreeNN",
    "ball_query",
    "ball_query_reference",
    "furthest_point_sample",
    "fused_multiply_add",
    "furthest_point_sample_reference",
    "gather_points",
    "gather_points_reference",
    "group_points",
    "group_points_reference",
    "inverse_distance_weights",
    "knn_points",
    "knn_points_reference",
    "check_coordinates",
    "select_backend",
    "three_interpolate",
    "three_interpolate_reference",
    "three_nn",
    "three_nn_reference",
]
