"""Training-time sample augmentations of the reference, each drawing from an explicit generator.

See `docs/data_formats.md` §3.2 steps 9 and 11, §3.5. Draw order inside one training sample (the
reference order, kept so a sample is a pure function of its generators):

1. NumPy: instance index, point choice, point noise (`point_noise`).
2. torch: `color_jitter` — one ``randperm(4)``, then one uniform each for brightness, contrast,
   saturation and hue.
3. NumPy: `rgb_add_noise` — the draws listed in its docstring.

NumPy draws go through `as_random_source`, which accepts a `numpy.random.Generator` (what cleanpose
uses) or a `numpy.random.RandomState`. The latter is only there so a sample can be compared draw for
draw with the reference code, which uses NumPy's legacy global generator (``np.random.seed(s)`` there
equals ``RandomState(s)`` here).
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as tvf
from PIL import Image

COLOR_JITTER = (0.4, 0.4, 0.4, 0.3)
"""Reference ``ColorJitter(brightness, contrast, saturation, hue)`` strengths."""


class RandomSource(Protocol):
    """The subset of `numpy.random.Generator` the data pipeline draws from."""

    def random(self) -> float: ...

    def integers(self, low: int, high: int | None = None) -> int: ...

    def standard_normal(self, size: tuple[int, ...]) -> np.ndarray: ...

    def normal(self, loc: float, scale: float, size: tuple[int, ...]) -> np.ndarray: ...

    def choice(self, a: int, size: int, replace: bool = True) -> np.ndarray: ...

    def permutation(self, x: int | np.ndarray) -> np.ndarray: ...


class _LegacySource:
    """`RandomSource` view of a `numpy.random.RandomState` with the reference's call mapping."""

    def __init__(self, state: np.random.RandomState) -> None:
        self._state = state

    def random(self) -> float:
        return self._state.rand()

    def integers(self, low: int, high: int | None = None) -> int:
        return self._state.randint(low, high)

    def standard_normal(self, size: tuple[int, ...]) -> np.ndarray:
        return self._state.standard_normal(size)

    def normal(self, loc: float, scale: float, size: tuple[int, ...]) -> np.ndarray:
        return self._state.normal(loc, scale, size)

    def choice(self, a: int, size: int, replace: bool = True) -> np.ndarray:
        return self._state.choice(a, size, replace=replace)

    def permutation(self, x: int | np.ndarray) -> np.ndarray:
        return self._state.permutation(x)


def as_random_source(rng: np.random.Generator | np.random.RandomState | RandomSource) -> RandomSource:
    """Wrap a NumPy generator for the pipeline's draws.

    Args:
        rng: a `numpy.random.Generator`, a `numpy.random.RandomState` (reference-compatible draws),
            or an object already implementing `RandomSource`.

    Raises:
        TypeError: `rng` is None or another type (the library never falls back to a global RNG).
    """
    if isinstance(rng, np.random.RandomState):
        return _LegacySource(rng)
    if isinstance(rng, (np.random.Generator, _LegacySource)):
        return rng
    raise TypeError(f"expected numpy.random.Generator or RandomState; got {type(rng).__name__}")


def point_noise(num_points: int, rng: RandomSource, sigma: float = 0.001, limit: float = 0.005) -> np.ndarray:
    """Clipped Gaussian jitter added to the back-projected points (reference step 9).

    Args:
        num_points: N.
        rng: NumPy random source (one ``standard_normal((N, 3))`` draw).
        sigma: standard deviation, metres.
        limit: absolute clip, metres.

    Returns:
        (N, 3) float64 metres, ``clip(sigma·randn, −limit, limit)``.
    """
    return np.clip(sigma * rng.standard_normal((num_points, 3)), -limit, limit)


def color_jitter(
    rgb: np.ndarray,
    generator: torch.Generator,
    brightness: float = COLOR_JITTER[0],
    contrast: float = COLOR_JITTER[1],
    saturation: float = COLOR_JITTER[2],
    hue: float = COLOR_JITTER[3],
) -> np.ndarray:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` on a PIL image, seeded.

    Same parameter draws as `torchvision.transforms.ColorJitter.get_params` (``randperm(4)``, then
    uniforms on [1−b, 1+b], [1−c, 1+c], [1−s, 1+s], [−h, h]) but from `generator`; the adjustments
    are torchvision's PIL functions applied in the drawn order, so with the same torch state the
    result equals the reference's.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        generator: CPU `torch.Generator`.
        brightness, contrast, saturation: jitter strengths (factor range [max(0, 1−v), 1+v]).
        hue: hue jitter strength in [0, 0.5] (shift range [−hue, hue]).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    ranges = [
        (max(0.0, 1.0 - brightness), 1.0 + brightness),
        (max(0.0, 1.0 - contrast), 1.0 + contrast),
        (max(0.0, 1.0 - saturation), 1.0 + saturation),
        (-hue, hue),
    ]
    order = torch.randperm(4, generator=generator)
    factors = [float(torch.empty(1).uniform_(low, high, generator=generator)) for low, high in ranges]
    adjust = (tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue)
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    for which in order.tolist():
        image = adjust[which](image, factors[which])
    return np.array(image)


def linear_motion_blur(image: np.ndarray, angle_deg: float, length: int) -> np.ndarray:
    """Blur along a line of `length` pixels at `angle_deg`, as the reference's motion-blur kernel.

    The kernel is an ``a × a`` array, ``a = int(max(|cos|, |sin|)·length·2)``, holding a 1-valued line
    from its centre ``(a//2, a//2)`` to ``(int(cos·length + a//2), int(sin·length + a//2))``, normalized
    to sum 1 (centre pixel 1 if the line left it empty). ``a = 0`` returns the image unchanged.

    Args:
        image: (H, W, 3) uint8.
        angle_deg: line direction, degrees.
        length: line length, pixels.
    """
    radians = np.deg2rad(angle_deg)
    dx, dy = np.cos(radians), np.sin(radians)
    size = int(max(abs(dx), abs(dy)) * length * 2)
    if size <= 0:
        return image
    kernel = np.zeros((size, size))
    centre = size // 2
    end = (int(dx * length + centre), int(dy * length + centre))
    cv2.line(kernel, (centre, centre), end, 1.0)
    total = kernel.sum()
    if total == 0:
        kernel[centre, centre] = 1.0
    else:
        kernel /= total
    return cv2.filter2D(image, -1, kernel)


def rgb_add_noise(rgb: np.ndarray, rng: RandomSource) -> np.ndarray:
    """The reference's photometric noise (``rgb_add_noise``, docs/data_formats.md §3.5), drawing from `rng`.

    Draws, in order: gate ``random() > 0`` → S factor U(1.25, 1.45), V factor U(1.15, 1.35);
    ``random() > 0.8`` → sharpen centre ``9 + 3·random()``; ``random() > 0.8`` → motion-blur angle
    ``int(360·random())`` and length ``int(15·random()) + 1``; ``random() > 0.8`` →
    (``random() > 0.2`` ? 3×3 : 5×5) Gaussian blur with sigma ``random()``; ``random() > 0.2`` ?
    ``integers(15)`` : ``integers(25)`` noise sigma, then ``standard_normal((H, W, 3))``;
    ``random() > 0.8`` → ``normal(0, 7, (H, W, 3))``.

    The HSV step converts with OpenCV's BGR↔HSV codes although the array is RGB (docs/data_formats.md P16, kept:
    S/V scaling is channel-symmetric; only hue quantization differs).

    Args:
        rgb: (H, W, 3) uint8 RGB.
        rng: NumPy random source.

    Returns:
        (H, W, 3) uint8.
    """
    image = rgb
    if rng.random() > 0:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.uint16)
        hsv[:, :, 1] = hsv[:, :, 1] * (rng.random() * (1.45 - 1.25) + 1.25)
        hsv[:, :, 2] = hsv[:, :, 2] * (rng.random() * (1.35 - 1.15) + 1.15)
        hsv[:, :, 1] = np.clip(hsv[:, :, 1], 0, 255)
        hsv[:, :, 2] = np.clip(hsv[:, :, 2], 0, 255)
        image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)

    if rng.random() > 0.8:
        kernel = -np.ones((3, 3))
        kernel[1, 1] = rng.random() * 3 + 9
        kernel /= kernel.sum()
        image = cv2.filter2D(image, -1, kernel)

    if rng.random() > 0.8:
        angle_deg = int(rng.random() * 360)
        length = int(rng.random() * 15) + 1
        image = linear_motion_blur(image, angle_deg, length)

    if rng.random() > 0.8:
        kernel_size = (3, 3) if rng.random() > 0.2 else (5, 5)
        image = cv2.GaussianBlur(image, kernel_size, rng.random())

    sigma = rng.integers(15) if rng.random() > 0.2 else rng.integers(25)
    image = np.clip(image + rng.standard_normal(image.shape) * sigma, 0, 255).astype(np.uint8)

    if rng.random() > 0.8:
        image = image + rng.normal(0.0, 7.0, image.shape)

    return np.clip(image, 0, 255).astype(np.uint8)
