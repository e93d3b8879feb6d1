"""Furthest point sampling against a literal simulation of the votenet CUDA kernel."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from cleanpose.errors import BackendUnavailableError
from cleanpose.ops import furthest_point_sample, furthest_point_sample_reference, fused_multiply_add
from cleanpose.ops.fps import kernel_num_threads
from tests.ops.triton_interpreter import run_in_triton_interpreter


def fma_oracle(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    """Single-rounding float32 a*b + c with exact rational arithmetic (ties to even)."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    guess = np.float32(float(exact))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(candidates, key=lambda v: (abs(Fraction(float(v)) - exact), int(v.view(np.int32)) & 1))


def simulate_kernel(points: np.ndarray, num_samples: int) -> list[int]:
    """Thread-by-thread replay of the compiled `furthest_point_sampling_kernel` on one cloud.

    Float32 scalars; the squared norm and distance use the FMA contraction of the compiled kernel,
    fma(z, z, fma(y, y, x*x)), via an exact rational oracle."""
    points = points.astype(np.float32)
    n = len(points)
    threads = 1
    while threads * 2 <= n and threads < 512:
        threads *= 2
    temp = [np.float32(1e10)] * n
    picks = [0] * num_samples
    old = 0
    for step in range(1, num_samples):
        x1, y1, z1 = points[old]
        dists, dists_i = [], []
        for tid in range(threads):
            besti, best = 0, np.float32(-1)
            for k in range(tid, n, threads):
                x2, y2, z2 = points[k]
                mag = fma_oracle(z2, z2, fma_oracle(y2, y2, x2 * x2))
                if float(mag) <= 1e-3:
                    continue
                dx, dy, dz = x2 - x1, y2 - y1, z2 - z1
                d = fma_oracle(dz, dz, fma_oracle(dy, dy, dx * dx))
                d2 = min(d, temp[k])
                temp[k] = d2
                if d2 > best:
                    besti, best = k, d2
            dists.append(best)
            dists_i.append(besti)
        half = threads // 2
        while half >= 1:
            for tid in range(half):
                v1, v2 = dists[tid], dists[tid + half]
                i1, i2 = dists_i[tid], dists_i[tid + half]
                dists[tid] = max(v1, v2)
                dists_i[tid] = i2 if v2 > v1 else i1
            half //= 2
        old = dists_i[0]
        picks[step] = old
    return picks


def lattice_cloud(generator: torch.Generator, batch: int, n: int) -> torch.Tensor:
    """Points on a coarse lattice (many exact ties, duplicates, and points inside the skip radius)."""
    return (torch.randint(-3, 4, (batch, n, 3), generator=generator).float() * 0.02).contiguous()


def test_thread_count_matches_kernel_formula():
    expected = {1: 1, 2: 2, 3: 2, 7: 4, 8: 8, 9: 8, 511: 256, 512: 512, 513: 512, 1024: 512, 4096: 512}
    assert {n: kernel_num_threads(n) for n in expected} == expected


def test_hand_worked_eight_points():
    # Tie between 1 and 4 at the first step: the kernel's tree keeps thread 4 (bit-reversed 001 < 100),
    # not the first maximum. Point 5 is within the skip radius and is never picked. After 7 picks every
    # eligible temp is 0 and the tree keeps returning point 0.
    points = torch.tensor(
        [[1, 0, 0], [1, 2, 0], [1.5, 0, 0], [1, 0.5, 0], [1, -2, 0], [0, 0, 0.01], [0.5, 0, 0], [1, 0, 1]]
    ).unsqueeze(0)
    assert furthest_point_sample(points, 10).tolist() == [[0, 4, 1, 7, 2, 6, 3, 0, 0, 0]]


def test_exhausted_points_repeat_by_tree_order_when_point_zero_is_skipped():
    # Point 0 is at the origin (skipped but still the first pick). Ties at each step resolve as
    # 2 (thread 2 -> reversed 01) over 1 (reversed 10) over 3 (reversed 11); once exhausted, 2 repeats.
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0]]).unsqueeze(0)
    assert furthest_point_sample(points, 6).tolist() == [[0, 2, 1, 3, 2, 2]]


def test_all_points_skipped_gives_zeros():
    points = torch.full((2, 5, 3), 0.01)  # squared norm 3e-4 <= 1e-3
    assert furthest_point_sample(points, 4).tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]


def test_skip_threshold_is_inclusive_and_compared_in_double():
    # float32 norms just below and exactly at 1e-3 are skipped; just above is a candidate.
    at = np.float32(np.sqrt(1e-3))
    while float(at * at) > 1e-3:
        at = np.nextafter(at, np.float32(0))
    above = np.nextafter(at, np.float32(1))
    while float(above * above) <= 1e-3:
        above = np.nextafter(above, np.float32(1))
    points = torch.tensor([[1.0, 0, 0], [float(at), 0, 0], [float(above), 0, 0], [0.5, 0, 0]]).unsqueeze(0)
    picks = furthest_point_sample(points, 4)[0].tolist()
    assert picks == simulate_kernel(points[0].numpy(), 4)
    assert 1 not in picks and 2 in picks


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 32, 37, 70])
@pytest.mark.parametrize("m_factor", [0.5, 1.0, 1.6])
def test_matches_kernel_simulation_on_lattice_clouds(n, m_factor):
    generator = torch.Generator().manual_seed(1000 + n)
    points = lattice_cloud(generator, 3, n)
    num_samples = max(1, int(n * m_factor))
    got = furthest_point_sample(points, num_samples)
    assert got.dtype == torch.int64 and got.shape == (3, num_samples)
    for b in range(3):
        assert got[b].tolist() == simulate_kernel(points[b].numpy(), num_samples), f"cloud {b}"


def test_matches_kernel_simulation_on_generic_clouds_with_more_than_512_points():
    generator = torch.Generator().manual_seed(7)
    points = torch.rand(1, 600, 3, generator=generator) * 0.2 - 0.1
    got = furthest_point_sample(points, 12)
    assert got[0].tolist() == simulate_kernel(points[0].numpy(), 12)


def test_generic_data_equals_first_maximum_greedy_in_float64():
    # With distinct distances the kernel is plain greedy FPS; recompute it in float64.
    generator = torch.Generator().manual_seed(3)
    points = torch.rand(2, 50, 3, generator=generator, dtype=torch.float64) - 0.5
    got = furthest_point_sample(points.float(), 20)
    for b in range(2):
        cloud = points[b].float().double().numpy()
        eligible = (cloud**2).sum(1) > 1e-3
        min_dist = np.full(len(cloud), np.inf)
        picks = [0]
        for _ in range(19):
            min_dist = np.minimum(min_dist, ((cloud - cloud[picks[-1]]) ** 2).sum(1))
            picks.append(int(np.argmax(np.where(eligible, min_dist, -1.0))))
        assert got[b].tolist() == picks


def test_reference_backend_and_zero_samples():
    points = torch.rand(2, 9, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        furthest_point_sample(points, 5, backend="reference"), furthest_point_sample_reference(points, 5)
    )
    assert furthest_point_sample(points, 0).shape == (2, 0)


def test_errors():
    with pytest.raises(ValueError, match=r"points has shape \(4, 3\); expected \(B, N, 3\)"):
        furthest_point_sample(torch.zeros(4, 3), 2)
    with pytest.raises(ValueError, match="expected N >= 1"):
        furthest_point_sample(torch.zeros(1, 0, 3), 2)
    with pytest.raises(ValueError, match="num_samples is -1"):
        furthest_point_sample(torch.zeros(1, 4, 3), -1)
    with pytest.raises(ValueError, match="dtype torch.int64; expected a floating dtype"):
        furthest_point_sample(torch.zeros(1, 4, 3, dtype=torch.int64), 2)
    with pytest.raises(
        BackendUnavailableError, match="backend 'cuda' is not available; valid backends: auto, reference"
    ):
        furthest_point_sample(torch.zeros(1, 4, 3), 2, backend="cuda")


def test_fma_rounding_decides_exact_plain_ties():
    # Two points at exactly equal plain-rounded distance from point 0 but different FMA-rounded
    # distances: the compiled kernel (FMA) picks the FMA-larger one, the plain formula would keep
    # point 2 (thread 0 wins ties). Candidates are searched on the CPU, then checked against the oracle.
    rng = np.random.default_rng(0)
    origin = np.float32([0.05, 0.05, 0.05])
    candidates = (origin + rng.normal(size=(200_000, 3)) * 0.06).astype(np.float32)
    diff = candidates - origin
    plain = (diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]) + diff[:, 2] * diff[:, 2]
    t = torch.from_numpy(diff)
    fma = fused_multiply_add(t[:, 2], t[:, 2], fused_multiply_add(t[:, 1], t[:, 1], t[:, 0] * t[:, 0])).numpy()
    order = np.argsort(plain, kind="stable")
    tie = next(
        k
        for k in range(len(order) - 1)
        if plain[order[k]] == plain[order[k + 1]]
        and fma[order[k]] != fma[order[k + 1]]
        and (candidates[order[k]] ** 2).sum() > 1e-2
        and (candidates[order[k + 1]] ** 2).sum() > 1e-2
    )
    first, second = order[tie], order[tie + 1]
    larger, smaller = (first, second) if fma[first] > fma[second] else (second, first)
    cloud = np.stack([origin, candidates[larger], candidates[smaller]])
    expected = simulate_kernel(cloud, 2)
    assert expected == [0, 1]
    assert furthest_point_sample(torch.from_numpy(cloud).unsqueeze(0), 2).tolist() == [expected]


HAND_CASES = [
    ([[1, 0, 0], [1, 2, 0], [1.5, 0, 0], [1, 0.5, 0], [1, -2, 0], [0, 0, 0.01], [0.5, 0, 0], [1, 0, 1]], 10),
    ([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0]], 6),
    ([[0.01, 0.01, 0.01]] * 5, 4),
]

_INTERPRETER_SCRIPT = """
import json, sys, torch
from cleanpose.ops import furthest_point_sample
cases = json.load(sys.stdin)
print(json.dumps([furthest_point_sample(torch.tensor(p), m, backend="triton").tolist() for p, m in cases]))
"""


def dyadic_lattice_cloud(generator: torch.Generator, batch: int, n: int) -> torch.Tensor:
    """Lattice points at multiples of 1/32 m: every product is exact, so rounding cannot decide a tie."""
    return torch.randint(-3, 4, (batch, n, 3), generator=generator).float() / 32


def test_triton_kernel_in_the_interpreter_matches_the_kernel_simulation():
    # The Triton kernel's logic (skip rule, tie priority, exhausted clouds, M > N, no eligible point) in
    # Triton's CPU interpreter, which must be switched on before Triton is imported: a subprocess.
    pytest.importorskip("triton")
    generator = torch.Generator().manual_seed(11)
    cases = [([points], m) for points, m in HAND_CASES]
    for n, m in [(1, 3), (3, 5), (8, 13), (37, 30), (70, 112), (600, 40)]:
        cases.append((dyadic_lattice_cloud(generator, 2, n).tolist(), m))
    results = run_in_triton_interpreter(_INTERPRETER_SCRIPT, cases)
    got = results
    for (clouds, m), picks in zip(cases, got):
        assert picks == [simulate_kernel(np.array(cloud, dtype=np.float32), m) for cloud in clouds]


@pytest.mark.requires_cuda
@pytest.mark.parametrize("n, m", [(1, 4), (37, 60), (1024, 512), (2000, 256)])
def test_triton_backend_on_cuda_equals_the_reference(n, m):
    generator = torch.Generator().manual_seed(n)
    for points in (lattice_cloud(generator, 4, n), torch.rand(4, n, 3, generator=generator) * 0.3 - 0.15):
        expected = furthest_point_sample_reference(points, m)
        assert torch.equal(furthest_point_sample(points.cuda(), m).cpu(), expected)  # "auto" is Triton on CUDA
        assert torch.equal(furthest_point_sample(points.cuda(), m, backend="triton").cpu(), expected)


@pytest.mark.requires_cuda
def test_triton_backend_on_cuda_hand_cases():
    for points, m in HAND_CASES:
        cloud = torch.tensor([points], dtype=torch.float32)
        expected = [simulate_kernel(cloud[0].numpy(), m)]
        assert furthest_point_sample(cloud.cuda(), m, backend="triton").tolist() == expected
