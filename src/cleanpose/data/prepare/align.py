"""Similarity alignment of a NOCS map to depth: Umeyama inside RANSAC, as the DPDN/SPD preprocessing does.

See `docs/data_formats.md` §2.3 step 10 (CAMERA). The source points are centred NOCS coordinates
``q = c − 0.5`` (normalized object units), the target points the back-projected depth (millimetres);
the result maps ``p = s·R·q + t``. RANSAC draws 5 indices with replacement per hypothesis from a
legacy `numpy.random.RandomState` (the generator the reference draws from, through NumPy's global
state), so a seeded `RandomState` reproduces the reference draw for draw.

Arrays are kept as (3, N) columns with a homogeneous fourth row, the layout of the reference, so
that sums and products run in the same order and results agree to the last bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cleanpose.errors import DataFormatError

MAX_ITERATIONS = 128
"""RANSAC hypotheses at most."""

CONFIDENCE = 0.99
"""Early stop once ``1 − (1 − r⁵)^i`` exceeds this (r = best inlier ratio, i = 0-based iteration)."""

INLIER_DIAMETER_FRACTION = 0.1
"""Inlier threshold = this × source diameter × hypothesis scale."""

MIN_INLIER_RATIO = 0.1
"""Alignment fails when the best hypothesis has fewer inliers than this fraction."""


class AlignmentError(DataFormatError):
    """RANSAC found no similarity transform (too few inliers, or non-finite input)."""


class Similarity(NamedTuple):
    """``p = scale · rotation @ q + translation``."""

    scale: float
    """Target units per source unit (mm per normalized unit for NOCS → depth)."""
    rotation: np.ndarray
    """(3, 3) float64, proper rotation."""
    translation: np.ndarray
    """(3,) float64, target units."""
    inlier_ratio: float
    """Fraction of points that were inliers of the best hypothesis (1.0 for a plain `umeyama`)."""


def _umeyama_columns(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Umeyama on homogeneous (4, N) columns; returns (scale, R, t, 4×4 transform)."""
    count = source.shape[1]
    source_mean = np.mean(source[:3, :], axis=1)
    target_mean = np.mean(target[:3, :], axis=1)
    centred_source = source[:3, :] - source_mean[:, None]
    centred_target = target[:3, :] - target_mean[:, None]
    covariance = np.matmul(centred_target, centred_source.T) / count
    if np.isnan(covariance).any():
        raise AlignmentError("similarity alignment: the points contain NaN")
    left, singular, right_t = np.linalg.svd(covariance, full_matrices=True)
    if np.linalg.det(left) * np.linalg.det(right_t) < 0.0:  # reflection: flip the weakest axis
        singular[-1] = -singular[-1]
        left[:, -1] = -left[:, -1]
    rotation = np.matmul(left, right_t)
    variance = np.var(source[:3, :], axis=1).sum()
    with np.errstate(divide="ignore", invalid="ignore"):  # 5 equal picks: zero variance, hypothesis fails
        scale = 1 / variance * np.sum(singular)
        translation = target_mean - source_mean.dot(scale * rotation.T)
    transform = np.identity(4)
    transform[:3, :3] = scale * rotation
    transform[:3, 3] = translation
    return scale, rotation, translation, transform


def _homogeneous(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"{name} must be (N, 3) with N >= 1; got shape {points.shape}")
    return np.transpose(np.hstack([points, np.ones([len(points), 1])]))


def umeyama(source: np.ndarray, target: np.ndarray) -> Similarity:
    """Least-squares similarity transform source → target (Umeyama 1991), no outlier handling.

    Args:
        source: (N, 3) points.
        target: (N, 3) corresponding points.

    Returns:
        `Similarity` (float64) with ``inlier_ratio`` 1.

    Raises:
        AlignmentError: NaN in the input.
    """
    scale, rotation, translation, _ = _umeyama_columns(_homogeneous(source, "source"), _homogeneous(target, "target"))
    return Similarity(float(scale), rotation, translation, 1.0)


def ransac_similarity(source: np.ndarray, target: np.ndarray, generator: np.random.RandomState) -> Similarity:
    """RANSAC + Umeyama similarity source → target with the reference's parameters.

    Hypotheses from 5 indices drawn with ``generator.randint(N, size=5)`` (with replacement); a point is
    an inlier when ``‖target − (s·R·source + t)‖ < 0.1 · diameter · s`` (diameter = twice the largest
    distance of a source point from the source centroid); at most 128 hypotheses, early stop after
    iteration i when ``1 − (1 − r⁵)^i > 0.99``; the final transform is Umeyama on the best inlier set.

    Args:
        source: (N, 3) points (centred NOCS coordinates).
        target: (N, 3) corresponding points (camera frame, any unit).
        generator: legacy NumPy generator; the same state gives the reference's draws.

    Returns:
        `Similarity` (float64).

    Raises:
        AlignmentError: best inlier ratio below 0.1, or NaN in the input.
    """
    source_h, target_h = _homogeneous(source, "source"), _homogeneous(target, "target")
    if source_h.shape != target_h.shape:
        raise ValueError(f"source and target differ in length: {source_h.shape[1]} vs {target_h.shape[1]}")
    count = source_h.shape[1]
    centred = source_h[:3, :] - np.mean(source_h[:3, :], axis=1)[:, None]
    threshold = 2 * np.amax(np.linalg.norm(centred, axis=0)) * INLIER_DIAMETER_FRACTION
    best_ratio, best_inliers = 0.0, np.arange(count)
    for iteration in range(MAX_ITERATIONS):
        picks = generator.randint(count, size=5)
        scale, _, _, transform = _umeyama_columns(source_h[:, picks], target_h[:, picks])
        residual = np.linalg.norm((target_h - np.matmul(transform, source_h))[:3, :], axis=0)
        with np.errstate(invalid="ignore"):
            inliers = np.where(residual < scale * threshold)[0]
        ratio = inliers.shape[0] / count
        if ratio > best_ratio:
            best_ratio, best_inliers = ratio, inliers
        if (1 - (1 - best_ratio**5) ** iteration) > CONFIDENCE:
            break
    if best_ratio < MIN_INLIER_RATIO:
        raise AlignmentError(f"similarity alignment: best inlier ratio {best_ratio:.3f} < {MIN_INLIER_RATIO}")
    scale, rotation, translation, _ = _umeyama_columns(source_h[:, best_inliers], target_h[:, best_inliers])
    return Similarity(float(scale), rotation, translation, best_ratio)
