"""Shared helpers of cleanpose.ops: exact float32 FMA emulation, backend selection, coordinate checks."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from cleanpose.errors import BackendUnavailableError
from cleanpose.ops import check_coordinates, fused_multiply_add, select_backend


def fma_oracle(a: float, b: float, c: float) -> float:
    """Round a*b + c (exact rational) once to float32, ties to even."""
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    guess = np.float32(float(exact))
    near = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return float(min(near, key=lambda v: (abs(Fraction(float(v)) - exact), int(v.view(np.int32)) & 1)))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.requires_cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_fma_halfway_cases_where_rounding_twice_is_wrong(device):
    # a*b = ±2^-17 (1 - 2^-46): the float64 sum lands exactly halfway between two float32 numbers and
    # the lost 2^-63 term decides. Rounding the float64 sum (ties to even) gets both cases wrong.
    # The third entry is not halfway (on CUDA it takes the same, sync-free, path as the first two).
    a = torch.tensor([2.0**-9 * (1 + 2.0**-23), -(2.0**-9) * (1 + 2.0**-23), 0.3])
    b = torch.tensor([2.0**-8 * (1 - 2.0**-23), 2.0**-8 * (1 - 2.0**-23), 0.7])
    c = torch.tensor([128 + 2.0**-16, 128 + 3 * 2.0**-16, 0.1])
    got = fused_multiply_add(a.to(device), b.to(device), c.to(device)).cpu()
    expected = [fma_oracle(float(x), float(y), float(z)) for x, y, z in zip(a, b, c)]
    assert got.tolist() == expected
    assert expected[:2] == [128 + 2.0**-16, 128 + 3 * 2.0**-16]
    double_rounded = (a.double() * b.double() + c.double()).float()
    assert double_rounded.tolist() != expected


@pytest.mark.parametrize("device", DEVICES)
def test_fma_matches_rational_oracle_on_random_values(device):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3000, generator=generator)
    b = torch.randn(3000, generator=generator)
    c = torch.randn(3000, generator=generator) * torch.logspace(-8, 2, 3000)
    got = fused_multiply_add(a.to(device), b.to(device), c.to(device)).cpu()
    expected = [fma_oracle(float(x), float(y), float(z)) for x, y, z in zip(a, b, c)]
    assert got.tolist() == expected
    assert (got != a * b + c).any()  # the single rounding is visible on this data
    assert got.dtype == torch.float32


def test_fma_other_dtypes_use_plain_arithmetic():
    a = torch.tensor([1.5], dtype=torch.float64)
    assert fused_multiply_add(a, a, a).tolist() == [3.75]


def test_select_backend_and_check_coordinates():
    backends = {"reference": len}
    assert select_backend("op", backends, "auto", torch.zeros(1)) is len
    assert select_backend("op", backends, "reference", torch.zeros(1)) is len
    with_triton = {"reference": len, "triton": abs}
    assert select_backend("op", with_triton, "auto", torch.zeros(1)) is len
    assert select_backend("op", with_triton, "auto", torch.zeros(1, device="meta")) is len
    assert select_backend("op", with_triton, "triton", torch.zeros(1)) is abs
    with pytest.raises(
        BackendUnavailableError, match="op: backend 'cuda' is not available; valid backends: auto, reference"
    ):
        select_backend("op", backends, "cuda", torch.zeros(1))
    with pytest.raises(ValueError, match=r"op: xyz has shape \(2, 5, 2\); expected \(B, N, 3\)"):
        check_coordinates("op", "xyz", torch.zeros(2, 5, 2))
