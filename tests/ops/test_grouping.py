"""gather_points / group_points against explicit loops, and gradcheck."""

import pytest
import torch

from cleanpose.errors import BackendUnavailableError
from cleanpose.ops import gather_points, group_points


@pytest.mark.parametrize("b, c, n, m, s", [(1, 1, 1, 1, 1), (2, 3, 7, 4, 5), (3, 5, 16, 9, 2)])
def test_gather_and_group_match_loops(b, c, n, m, s):
    generator = torch.Generator().manual_seed(b * 100 + n)
    features = torch.randn(b, c, n, generator=generator, dtype=torch.float64)
    idx_2d = torch.randint(0, n, (b, m), generator=generator)
    idx_3d = torch.randint(0, n, (b, m, s), generator=generator)
    gathered = gather_points(features, idx_2d)
    grouped = group_points(features, idx_3d)
    expected_gathered = torch.empty(b, c, m, dtype=torch.float64)
    expected_grouped = torch.empty(b, c, m, s, dtype=torch.float64)
    for bi in range(b):
        for ci in range(c):
            for mi in range(m):
                expected_gathered[bi, ci, mi] = features[bi, ci, idx_2d[bi, mi]]
                for si in range(s):
                    expected_grouped[bi, ci, mi, si] = features[bi, ci, idx_3d[bi, mi, si]]
    torch.testing.assert_close(gathered, expected_gathered, rtol=0, atol=0)
    torch.testing.assert_close(grouped, expected_grouped, rtol=0, atol=0)
    # int32 indices (the reference kernels' dtype) give the same result.
    torch.testing.assert_close(group_points(features, idx_3d.int()), expected_grouped, rtol=0, atol=0)


def test_gradients_scatter_add_into_repeated_indices():
    features = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([[[0, 0, 3], [3, 1, 0]]])
    group_points(features, idx).sum().backward()
    # point 0 appears 3 times, point 1 once, point 2 never, point 3 twice (per channel)
    torch.testing.assert_close(features.grad, torch.tensor([[[3.0, 1, 0, 2], [3.0, 1, 0, 2]]], dtype=torch.float64))


def test_gradcheck():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 3, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    idx_2d = torch.randint(0, 6, (2, 4), generator=generator)
    idx_3d = torch.randint(0, 6, (2, 4, 3), generator=generator)
    assert torch.autograd.gradcheck(lambda f: gather_points(f, idx_2d), (features,))
    assert torch.autograd.gradcheck(lambda f: group_points(f, idx_3d), (features,))


def test_errors():
    features = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match=r"features has shape \(3, 5\); expected \(B, C, N\)"):
        gather_points(torch.zeros(3, 5), torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"idx has shape \(2, 4, 1\) for features \(2, 3, 5\); expected \(B, M\)"):
        gather_points(features, torch.zeros(2, 4, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"idx has shape \(3, 4, 2\) for features \(2, 3, 5\); expected \(B, M, S\)"):
        group_points(features, torch.zeros(3, 4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="idx has dtype torch.float32; expected int64"):
        group_points(features, torch.zeros(2, 4, 2))
    with pytest.raises(RuntimeError, match="index"):
        gather_points(features, torch.full((2, 1), 5))
    with pytest.raises(BackendUnavailableError, match="group_points: backend 'cuda'"):
        group_points(features, torch.zeros(2, 4, 2, dtype=torch.int64), backend="cuda")
