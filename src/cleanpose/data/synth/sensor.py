"""Structured-light / time-of-flight style depth sensor noise applied to rendered depth.

Model (applied in this order, all in metres):

1. Range limits: depth outside ``[min_range, max_range]`` becomes missing (0).
2. Grazing angles: a pixel whose surface is seen at an incidence with ``|cos| < grazing_cos`` is
   dropped with probability ``grazing_drop_probability``.
3. Depth edges: a pixel whose 3×3 neighbourhood spans a depth jump larger than
   ``edge_jump_relative · z`` is dropped with probability ``edge_drop_probability`` (the flying-pixel
   and shadow holes of real sensors at silhouettes).
4. Dropout blobs (optional): seeds drawn with probability ``dropout_probability`` per pixel, grown
   to discs of radius up to ``dropout_radius_px`` pixels.
5. Axial noise: Gaussian with depth-dependent standard deviation
   ``σ(z) = sigma_base + sigma_quadratic · (z − 0.4)²`` (Nguyen, Izadi & Lovell, 3DIMPVT 2012,
   Kinect axial noise model).

Every draw comes from the passed generator, so a (seed, frame) key reproduces the noise exactly.
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SensorNoise:
    """Parameters of the depth noise model (see the module docstring); `enabled=False` is a perfect sensor."""

    enabled: bool = True
    """Apply the model at all; False returns the input depth unchanged (range limits included)."""
    min_range: float = 0.15
    """Closest measurable depth, metres."""
    max_range: float = 4.0
    """Farthest measurable depth, metres."""
    sigma_base: float = 0.0012
    """Axial noise standard deviation at 0.4 m, metres."""
    sigma_quadratic: float = 0.0019
    """Growth of the standard deviation per (z − 0.4 m)², metres per square metre."""
    grazing_cos: float = 0.2
    """Incidence cosine below which a pixel is at a grazing angle (0.2 ≈ 78°)."""
    grazing_drop_probability: float = 0.8
    """Probability that a grazing-angle pixel has no depth."""
    edge_jump_relative: float = 0.03
    """Relative depth jump in a 3×3 window that marks a depth edge."""
    edge_drop_probability: float = 0.5
    """Probability that a depth-edge pixel has no depth."""
    dropout_probability: float = 3e-5
    """Per-pixel probability of a dropout blob centre; 0 disables dropout."""
    dropout_radius_px: int = 4
    """Largest dropout blob radius, pixels."""


def apply_sensor_noise(
    depth: np.ndarray, cos_incidence: np.ndarray, generator: np.random.Generator, noise: SensorNoise
) -> np.ndarray:
    """Turn rendered depth into a noisy sensor measurement.

    Args:
        depth: (H, W) float, metres, camera frame z; 0 where the ray hit nothing.
        cos_incidence: (H, W) float, |cos| between the viewing ray and the surface normal.
        generator: source of every random draw.
        noise: model parameters.

    Returns:
        (H, W) float64 noisy depth in metres; 0 marks missing measurements.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = depth > 0
    if not noise.enabled:
        return np.where(valid, depth, 0.0)
    valid &= (depth >= noise.min_range) & (depth <= noise.max_range)
    height, width = depth.shape
    uniform = generator.random((3, height, width))
    grazing = np.asarray(cos_incidence) < noise.grazing_cos
    valid &= ~(grazing & (uniform[0] < noise.grazing_drop_probability))

    far = depth.astype(np.float32)
    far[depth <= 0] = 1e3  # missing depth counts as infinitely far when finding silhouettes
    kernel = np.ones((3, 3), np.uint8)
    jump = cv2.dilate(far, kernel) - cv2.erode(far, kernel)
    edges = jump > noise.edge_jump_relative * np.maximum(depth, 1e-6)
    valid &= ~(edges & (uniform[1] < noise.edge_drop_probability))

    if noise.dropout_probability > 0:
        seeds = uniform[2] < noise.dropout_probability
        if seeds.any():
            radius = int(generator.integers(1, noise.dropout_radius_px + 1))
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            valid &= ~cv2.dilate(seeds.astype(np.uint8), disc).astype(bool)

    sigma = noise.sigma_base + noise.sigma_quadratic * (depth - 0.4) ** 2
    noisy = depth + generator.standard_normal((height, width)) * sigma
    return np.where(valid & (noisy > 0), noisy, 0.0)


def to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Round metric depth to the uint16 millimetres of depth PNGs (values beyond 65.535 m become 0).

    Args:
        depth: (H, W) float, metres; 0 = missing.

    Returns:
        (H, W) uint16 millimetres.
    """
    millimetres = np.rint(np.asarray(depth, dtype=np.float64) * 1000.0)
    millimetres[(millimetres < 0) | (millimetres > 65535)] = 0
    return millimetres.astype(np.uint16)
