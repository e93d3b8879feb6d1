"""knn_points against a float64 full distance matrix."""

import numpy as np
import pytest
import torch

from cleanpose.errors import BackendUnavailableError
from cleanpose.ops import knn_points


def brute_knn(query: np.ndarray, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    squared = ((query[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    order = np.argsort(squared, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(squared, order, 1), order


@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (4, 9, 3), (16, 40, 8), (30, 64, 32)])
def test_direct_matches_brute_force_with_ties(m, n, k):
    generator = torch.Generator().manual_seed(m * n)
    query = torch.randint(-3, 4, (2, m, 3), generator=generator).float() / 8
    points = torch.randint(-3, 4, (2, n, 3), generator=generator).float() / 8
    dists, idx = knn_points(query, points, k)
    for b in range(2):
        expected_d, expected_i = brute_knn(query[b].double().numpy(), points[b].double().numpy(), k)
        np.testing.assert_array_equal(idx[b].numpy(), expected_i)
        np.testing.assert_array_equal(dists[b].double().numpy(), expected_d)


@pytest.mark.parametrize("distance", ["direct", "expanded"])
def test_generic_data_matches_float64(distance):
    generator = torch.Generator().manual_seed(11)
    query = torch.rand(3, 20, 3, generator=generator) - 0.5
    points = torch.rand(3, 50, 3, generator=generator) - 0.5
    dists, idx = knn_points(query, points, 6, distance=distance)
    for b in range(3):
        expected_d, expected_i = brute_knn(query[b].double().numpy(), points[b].double().numpy(), 6)
        np.testing.assert_array_equal(idx[b].numpy(), expected_i)
        np.testing.assert_allclose(dists[b].double().numpy(), expected_d, rtol=1e-5, atol=1e-6)


def test_expanded_form_is_the_teacher_matrix_product_rounding():
    # The expanded form must round as (-2 q.p^T + |q|^2) + |p|^2 in float32 (the teacher's formula),
    # checked element by element with numpy float32 scalars.
    generator = torch.Generator().manual_seed(12)
    query = torch.rand(1, 3, 3, generator=generator) - 0.5
    points = torch.rand(1, 7, 3, generator=generator) - 0.5
    dists, idx = knn_points(query, points, 7, distance="expanded")
    q, p = query[0].numpy(), points[0].numpy()
    for i in range(3):
        for slot in range(7):
            j = int(idx[0, i, slot])
            dot = np.float32(torch.matmul(query[0, i], points[0, j]).item())
            expected = (np.float32(-2) * dot + np.float32((q[i] ** 2).sum())) + np.float32((p[j] ** 2).sum())
            assert float(dists[0, i, slot]) == pytest.approx(float(expected), abs=2e-7)


def test_gradient_of_direct_distances():
    query = torch.tensor([[[0.0, 0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    points = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 0.0, 0.0]]], dtype=torch.float64)
    dists, idx = knn_points(query, points, 1)
    assert idx.tolist() == [[[1]]]
    dists.sum().backward()
    torch.testing.assert_close(query.grad, torch.tensor([[[-1.0, 0.0, 0.0]]], dtype=torch.float64))


def test_errors():
    points = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"k is 6 for points of shape \(2, 5, 3\); expected 1 <= k <= N"):
        knn_points(points, points, 6)
    with pytest.raises(ValueError, match="distance is 'l1'; valid values: direct, expanded"):
        knn_points(points, points, 2, distance="l1")
    with pytest.raises(ValueError, match=r"query has shape \(2, 5\)"):
        knn_points(torch.zeros(2, 5), points, 2)
    with pytest.raises(BackendUnavailableError, match="knn_points: backend 'cuda'"):
        knn_points(points, points, 2, backend="cuda")
