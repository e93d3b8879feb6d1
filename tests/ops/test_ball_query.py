"""Ball query against a brute-force scan (float64 on lattice points, where float32 is exact)."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from cleanpose.errors import BackendUnavailableError
from cleanpose.ops import ball_query
from tests.ops.triton_interpreter import run_in_triton_interpreter


def brute_force(radius: float, num_neighbors: int, points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    out = np.zeros((len(centers), num_neighbors), dtype=np.int64)
    for m, center in enumerate(centers):
        found = [j for j, point in enumerate(points) if ((point - center) ** 2).sum() < radius * radius]
        found = found[:num_neighbors]
        if found:
            out[m] = found + [found[0]] * (num_neighbors - len(found))
    return out


@pytest.mark.parametrize("n, m, s", [(1, 1, 1), (5, 3, 4), (20, 7, 3), (40, 12, 16), (64, 9, 32)])
@pytest.mark.parametrize("radius", [0.125, 0.25, 0.5])
def test_matches_brute_force_on_lattice(n, m, s, radius):
    # Coordinates are multiples of 1/16, so squared distances are exact in float32 and float64 and
    # points exactly on the sphere occur: they must be left out (strict <).
    generator = torch.Generator().manual_seed(n * 31 + m)
    points = torch.randint(-6, 7, (2, n, 3), generator=generator).float() / 16
    centers = torch.randint(-6, 7, (2, m, 3), generator=generator).float() / 16
    got = ball_query(radius, s, points, centers)
    assert got.dtype == torch.int64 and got.shape == (2, m, s)
    for b in range(2):
        expected = brute_force(radius, s, points[b].double().numpy(), centers[b].double().numpy())
        np.testing.assert_array_equal(got[b].numpy(), expected)


def test_hand_worked_padding_and_empty_ball():
    points = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0], [0.1, 0, 0], [0.0, 0.2, 0], [0.3, 0, 0]]])
    centers = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0], [5.0, 5, 5]]])
    got = ball_query(0.25, 4, points, centers)
    # centre 0: points 0, 2, 3 inside (0.3 and 0.5 outside) -> padded with 0
    # centre 1: point 1 alone (0.3 is at distance 0.2 -> inside) -> 1, 4, then padding with 1
    # centre 2: nothing inside -> zeros
    assert got.tolist() == [[[0, 2, 3, 0], [1, 4, 1, 1], [0, 0, 0, 0]]]


@pytest.mark.parametrize("radius", [0.01, 0.02, 0.04, 0.08, 0.16])
def test_inside_test_uses_float32_arithmetic(radius):
    # Points within a few ulps of the sphere: membership follows float32(x)^2 < float32(r)^2 rounded
    # in float32 (the kernel's arithmetic), which differs from exact arithmetic for one of them.
    r32 = np.float32(radius)
    xs = [r32]
    for _ in range(30):
        xs.append(np.nextafter(xs[-1], np.float32(1)))
    x = r32
    for _ in range(30):
        x = np.nextafter(x, np.float32(0))
        xs.append(x)
    points = torch.tensor([[0.0, 0.0, 0.0]] + [[float(x), 0.0, 0.0] for x in xs]).unsqueeze(0)
    got = ball_query(radius, len(points[0]), points, points[:, :1])[0, 0]
    inside = {0} | {j + 1 for j, x in enumerate(xs) if x * x < r32 * r32}
    assert set(got.tolist()) == inside
    assert any((x * x < r32 * r32) != (float(x) ** 2 < radius * radius) for x in xs)


def test_errors():
    points = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"centers has shape \(2, 4\); expected \(B, N, 3\)"):
        ball_query(0.1, 4, points, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="expected the same batch size"):
        ball_query(0.1, 4, points, torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="num_neighbors is 0"):
        ball_query(0.1, 0, points, points)
    with pytest.raises(ValueError, match="radius is -1"):
        ball_query(-1.0, 2, points, points)
    with pytest.raises(ValueError, match="dtype torch.float64 and points torch.float32"):
        ball_query(0.1, 2, points, points.double())
    with pytest.raises(BackendUnavailableError, match="ball_query: backend 'triton'"):
        ball_query(0.1, 2, points, points, backend="triton")


def test_radius_test_uses_the_kernels_fma_rounding():
    # Points within a few ulps of the sphere in random directions: membership follows
    # fma(dz, dz, fma(dy, dy, dx*dx)) < r*r (checked with an exact rational FMA), which differs from
    # the plain (dx*dx + dy*dy) + dz*dz for some of them.
    rng = np.random.default_rng(1)
    radius = 0.04
    r32 = np.float32(radius)
    directions = rng.normal(size=(3000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    center = np.float32([0.1, -0.05, 0.02])
    points = (center + directions * radius * (1 + rng.uniform(-2e-7, 2e-7, size=(3000, 1)))).astype(np.float32)
    got = ball_query(radius, 3000, torch.from_numpy(points)[None], torch.from_numpy(center)[None, None])[0, 0]

    def fma(a, b, c):
        exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
        guess = np.float32(float(exact))
        near = [np.nextafter(guess, np.float32(-1)), guess, np.nextafter(guess, np.float32(1))]
        return min(near, key=lambda v: (abs(Fraction(float(v)) - exact), int(v.view(np.int32)) & 1))

    inside, plain_inside = [], []
    for j, point in enumerate(points):
        dx, dy, dz = center - point
        if fma(dz, dz, fma(dy, dy, dx * dx)) < r32 * r32:
            inside.append(j)
        if (dx * dx + dy * dy) + dz * dz < r32 * r32:
            plain_inside.append(j)
    assert inside != plain_inside
    expected = inside + [inside[0]] * (3000 - len(inside))
    assert got.tolist() == expected


_INTERPRETER_SCRIPT = """
import json, sys, torch
from cleanpose.ops import ball_query
cases = json.load(sys.stdin)
out = [ball_query(r, s, torch.tensor(p), torch.tensor(c), backend="triton").tolist() for r, s, p, c in cases]
print(json.dumps(out))
"""


def test_triton_kernel_in_the_interpreter_matches_brute_force():
    # Triton's CPU interpreter must be switched on before Triton is imported: a subprocess. Dyadic lattice
    # coordinates make every product exact (the interpreter rounds tl.fma twice); N > 1024 crosses blocks.
    pytest.importorskip("triton")

    generator = torch.Generator().manual_seed(5)
    cases = []
    for n, m, s, radius in [(1, 1, 1, 0.25), (20, 7, 3, 0.125), (64, 9, 32, 0.5), (1100, 6, 24, 0.25), (9, 4, 5, 0.0)]:
        points = torch.randint(-6, 7, (2, n, 3), generator=generator).float() / 16
        centers = torch.randint(-6, 7, (2, m, 3), generator=generator).float() / 16
        cases.append((radius, s, points.tolist(), centers.tolist()))
    results = run_in_triton_interpreter(_INTERPRETER_SCRIPT, cases)
    for (radius, s, points, centers), got in zip(cases, results):
        for b in range(2):
            expected = brute_force(radius, s, np.array(points[b]), np.array(centers[b]))
            np.testing.assert_array_equal(np.array(got[b]), expected)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("n, m, s, radius", [(1024, 512, 32, 0.02), (1024, 512, 16, 0.01), (512, 256, 32, 0.04),
                                             (3000, 100, 64, 0.1), (37, 5, 8, 0.0)])  # fmt: skip
def test_triton_backend_on_cuda_equals_the_reference(n, m, s, radius):
    generator = torch.Generator().manual_seed(n + m)
    points = (torch.rand(3, n, 3, generator=generator) - 0.5) * 0.3
    centers = points[:, torch.randperm(n, generator=generator)[:m]] + 0.001 * torch.randn(3, m, 3, generator=generator)
    expected = ball_query(radius, s, points, centers, backend="reference")
    assert torch.equal(ball_query(radius, s, points.cuda(), centers.cuda()).cpu(), expected)  # auto = Triton
