"""`umeyama` / `ransac_similarity`: exact recovery of known similarity transforms, outlier rejection,
the reference's draw sequence, and failure on unrelated points."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cleanpose.data.prepare.align import AlignmentError, ransac_similarity, umeyama


def _transform(count, rng, scale=250.0):
    rotation = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    translation = rng.uniform(-300, 300, 3) + np.array([0, 0, 900])
    source = rng.uniform(-0.5, 0.5, (count, 3))
    return source, source @ (scale * rotation).T + translation, rotation, translation


def test_umeyama_recovers_exact_similarity():
    rng = np.random.default_rng(0)
    source, target, rotation, translation = _transform(50, rng, scale=137.5)
    fit = umeyama(source, target)
    assert fit.scale == pytest.approx(137.5, rel=1e-12)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-12)
    np.testing.assert_allclose(fit.translation, translation, atol=1e-9)


def test_umeyama_returns_a_rotation_for_mirrored_points():
    rng = np.random.default_rng(1)
    source = rng.uniform(-0.5, 0.5, (40, 3))
    fit = umeyama(source, source * np.array([1.0, 1.0, -1.0]))  # a reflection: best proper rotation instead
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.rotation @ fit.rotation.T, np.eye(3), atol=1e-12)


def test_ransac_ignores_outliers():
    rng = np.random.default_rng(2)
    source, target, rotation, translation = _transform(400, rng)
    outliers = rng.random(400) < 0.3
    directions = rng.normal(size=(outliers.sum(), 3))
    # displaced far beyond the inlier threshold (0.1 × diameter × scale < 0.1 · 1.8 · 250 = 45 mm)
    target[outliers] += (
        directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(200, 500, (outliers.sum(), 1))
    )
    fit = ransac_similarity(source, target, np.random.RandomState(7))
    assert fit.inlier_ratio == pytest.approx(1 - outliers.mean(), abs=0.02)
    assert fit.scale == pytest.approx(250.0, rel=1e-9)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(fit.translation, translation, atol=1e-6)


def _reference_draws(count, seed, ratios):
    """Index draws of the reference loop: 5 per hypothesis until 1 − (1 − r⁵)^i > 0.99 (r = best ratio)."""
    state = np.random.RandomState(seed)
    draws, best = [], 0.0
    for i, ratio in enumerate(ratios):
        draws.append(state.randint(count, size=5))
        best = max(best, ratio)
        if 1 - (1 - best**5) ** i > 0.99:
            break
    return draws


def test_ransac_draw_sequence_matches_the_global_state_of_the_reference():
    # noise-free data: every hypothesis has inlier ratio 1, so the loop stops after iteration 1 (2 draws)
    rng = np.random.default_rng(3)
    source, target, _, _ = _transform(100, rng)
    state = np.random.RandomState(11)
    ransac_similarity(source, target, state)
    expected = _reference_draws(100, 11, [1.0] * 128)
    assert len(expected) == 2
    follow = np.random.RandomState(11)
    for draw in expected:
        np.testing.assert_array_equal(follow.randint(100, size=5), draw)
    assert state.randint(1 << 30) == follow.randint(1 << 30)  # same number of draws consumed


def test_ransac_fails_on_unrelated_points():
    rng = np.random.default_rng(4)
    source = rng.uniform(-0.5, 0.5, (300, 3))
    target = rng.uniform(-1000, 1000, (300, 3))
    with pytest.raises(AlignmentError, match="inlier ratio"):
        ransac_similarity(source, target, np.random.RandomState(0))


def test_ransac_is_deterministic_given_the_seed():
    rng = np.random.default_rng(5)
    source, target, _, _ = _transform(200, rng)
    target += rng.normal(0, 2.0, target.shape)
    first = ransac_similarity(source, target, np.random.RandomState(3))
    second = ransac_similarity(source, target, np.random.RandomState(3))
    assert first.scale == second.scale
    np.testing.assert_array_equal(first.rotation, second.rotation)
