"""three_nn / inverse_distance_weights / three_interpolate against float64 brute force."""

import numpy as np
import pytest
import torch

from cleanpose.errors import BackendUnavailableError
from cleanpose.ops import inverse_distance_weights, three_interpolate, three_nn
from tests.ops.triton_interpreter import run_in_triton_interpreter


def brute_three_nn(unknown: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dists = np.full((len(unknown), 3), np.inf)
    idx = np.zeros((len(unknown), 3), dtype=np.int64)
    for i, u in enumerate(unknown):
        ranked = sorted((float(((u - k) ** 2).sum()), j) for j, k in enumerate(known))[:3]
        for slot, (d, j) in enumerate(ranked):
            dists[i, slot], idx[i, slot] = np.sqrt(d), j
    return dists, idx


@pytest.mark.parametrize("n, m", [(1, 1), (4, 2), (5, 3), (17, 8), (40, 25)])
def test_three_nn_matches_brute_force_with_ties(n, m):
    # Lattice coordinates (multiples of 1/8): exact squared distances and many ties, which must go
    # to the lower index first. With m < 3 the missing slots are (inf, 0), as in the kernel.
    generator = torch.Generator().manual_seed(n + 10 * m)
    unknown = torch.randint(-3, 4, (2, n, 3), generator=generator).float() / 8
    known = torch.randint(-3, 4, (2, m, 3), generator=generator).float() / 8
    result = three_nn(unknown, known)
    assert result.idx.dtype == torch.int64
    for b in range(2):
        dists, idx = brute_three_nn(unknown[b].double().numpy(), known[b].double().numpy())
        np.testing.assert_array_equal(result.idx[b].numpy(), idx)
        np.testing.assert_allclose(result.dists[b].numpy(), dists, rtol=1e-7)


def test_three_nn_generic_float_data():
    generator = torch.Generator().manual_seed(2)
    unknown = torch.rand(3, 30, 3, generator=generator) - 0.5
    known = torch.rand(3, 11, 3, generator=generator) - 0.5
    dists, idx = three_nn(unknown, known)
    for b in range(3):
        expected_d, expected_i = brute_three_nn(unknown[b].double().numpy(), known[b].double().numpy())
        np.testing.assert_array_equal(idx[b].numpy(), expected_i)
        np.testing.assert_allclose(dists[b].numpy(), expected_d, rtol=1e-6, atol=1e-7)


def test_inverse_distance_weights_hand_worked():
    dists = torch.tensor([[[1.0, 2.0, 4.0], [0.0, 1.0, 1.0]]], dtype=torch.float64)
    got = inverse_distance_weights(dists)
    # 1/1 : 1/2 : 1/4 -> 4/7, 2/7, 1/7 (the 1e-8 shifts them by ~1e-8 relative)
    torch.testing.assert_close(got[0, 0], torch.tensor([4 / 7, 2 / 7, 1 / 7], dtype=torch.float64), rtol=2e-8, atol=0)
    # a zero distance gets 1/1e-8 = 1e8 and dominates: weights 1e8/(1e8 + 2r), r/(1e8 + 2r) with r = 1/(1+1e-8)
    r = 1 / (1 + 1e-8)
    expected = torch.tensor([1e8, r, r], dtype=torch.float64) / (1e8 + 2 * r)
    torch.testing.assert_close(got[0, 1], expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(1, 2, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("b, c, m, n", [(1, 1, 3, 1), (2, 4, 5, 9), (3, 6, 12, 20)])
def test_three_interpolate_matches_loops(b, c, m, n):
    generator = torch.Generator().manual_seed(c * m + n)
    features = torch.randn(b, c, m, generator=generator, dtype=torch.float64)
    idx = torch.randint(0, m, (b, n, 3), generator=generator)
    weight = torch.rand(b, n, 3, generator=generator, dtype=torch.float64)
    got = three_interpolate(features, idx, weight)
    expected = torch.zeros(b, c, n, dtype=torch.float64)
    for bi in range(b):
        for ci in range(c):
            for i in range(n):
                for k in range(3):
                    expected[bi, ci, i] += features[bi, ci, idx[bi, i, k]] * weight[bi, i, k]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_three_interpolate_float32_summation_order():
    # out = (f0*w0 + f1*w1) + f2*w2 in float32, term by term.
    generator = torch.Generator().manual_seed(9)
    features = torch.randn(2, 3, 6, generator=generator)
    idx = torch.randint(0, 6, (2, 5, 3), generator=generator)
    weight = torch.rand(2, 5, 3, generator=generator)
    got = three_interpolate(features, idx, weight).numpy()
    f, w, ix = features.numpy(), weight.numpy(), idx.numpy()
    for bi in range(2):
        for ci in range(3):
            for i in range(5):
                terms = [np.float32(f[bi, ci, ix[bi, i, k]]) * np.float32(w[bi, i, k]) for k in range(3)]
                assert got[bi, ci, i] == (terms[0] + terms[1]) + terms[2]


def test_three_interpolate_gradcheck():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(2, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 5, (2, 4, 3), generator=generator)
    assert torch.autograd.gradcheck(lambda f, w: three_interpolate(f, idx, w), (features, weight))


def test_feature_propagation_reproduces_linear_function_at_known_points():
    # Interpolating onto the known points themselves returns their features (weight ~1 on distance 0).
    generator = torch.Generator().manual_seed(1)
    known = torch.rand(1, 8, 3, generator=generator)
    features = torch.randn(1, 4, 8, generator=generator)
    dists, idx = three_nn(known, known)
    out = three_interpolate(features, idx, inverse_distance_weights(dists))
    torch.testing.assert_close(out, features, rtol=1e-5, atol=1e-6)


def test_errors():
    points = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"known has shape \(2, 5\); expected \(B, N, 3\)"):
        three_nn(points, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="known has shape \\(2, 0, 3\\); expected at least one point"):
        three_nn(points, torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="expected the same batch size"):
        three_nn(points, torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match=r"dists has shape \(2, 5, 2\); expected \(B, n, 3\)"):
        inverse_distance_weights(torch.zeros(2, 5, 2))
    features = torch.zeros(2, 4, 5)
    idx = torch.zeros(2, 6, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"weight has shape \(2, 6, 2\); expected \(2, 6, 3\) like idx"):
        three_interpolate(features, idx, torch.zeros(2, 6, 2))
    with pytest.raises(ValueError, match=r"idx has shape \(2, 6\) for features \(2, 4, 5\); expected \(B, n, 3\)"):
        three_interpolate(features, torch.zeros(2, 6, dtype=torch.int64), torch.zeros(2, 6, 3))
    with pytest.raises(ValueError, match="weight has dtype torch.float64 and features torch.float32"):
        three_interpolate(features, idx, torch.zeros(2, 6, 3, dtype=torch.float64))
    with pytest.raises(BackendUnavailableError, match="three_nn: backend 'fast'"):
        three_nn(points, points, backend="fast")


_INTERPRETER_SCRIPT = """
import json, sys, torch
from cleanpose.ops import three_nn
cases = json.load(sys.stdin)
out = []
for u, k in cases:
    result = three_nn(torch.tensor(u), torch.tensor(k), backend="triton")
    out.append([result.dists.tolist(), result.idx.tolist()])
print(json.dumps(out))
"""


def test_three_nn_triton_kernel_in_the_interpreter_matches_brute_force():
    # Triton's CPU interpreter (switched on before Triton is imported: a subprocess) on lattice clouds with
    # many ties and fewer than three known points; dyadic coordinates keep the doubly rounded fma exact.
    pytest.importorskip("triton")

    generator = torch.Generator().manual_seed(7)
    cases = []
    for n, m in [(1, 1), (4, 2), (17, 8), (40, 25), (30, 300)]:
        unknown = torch.randint(-3, 4, (2, n, 3), generator=generator).float() / 8
        known = torch.randint(-3, 4, (2, m, 3), generator=generator).float() / 8
        cases.append((unknown.tolist(), known.tolist()))
    results = run_in_triton_interpreter(_INTERPRETER_SCRIPT, cases)
    for (unknown, known), (dists, idx) in zip(cases, results):
        for b in range(2):
            expected_d, expected_i = brute_three_nn(np.array(unknown[b]), np.array(known[b]))
            np.testing.assert_array_equal(np.array(idx[b]), expected_i)
            np.testing.assert_allclose(np.array(dists[b], dtype=np.float64), expected_d, rtol=1e-7)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("n, m", [(1024, 512), (512, 256), (64, 2), (100, 5000)])
def test_three_nn_triton_on_cuda_equals_the_reference(n, m):
    generator = torch.Generator().manual_seed(n + m)
    unknown = (torch.rand(3, n, 3, generator=generator) - 0.5) * 0.3
    known = (torch.rand(3, m, 3, generator=generator) - 0.5) * 0.3
    expected = three_nn(unknown, known, backend="reference")
    got = three_nn(unknown.cuda(), known.cuda())  # auto = Triton on CUDA
    assert torch.equal(got.idx.cpu(), expected.idx)  # the decisions: exact
    # The squared distances are the kernel's to the bit; CUDA's float32 square root need not round as the
    # CPU's does (seen on an H100: not bitwise equal), so the distances are compared to a few ulps.
    torch.testing.assert_close(got.dists.cpu(), expected.dists, rtol=5e-7, atol=0)
