"""Augmentations: torchvision equality, documented draw order, hand-computed outputs."""

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from cleanpose.data.augment import (
    as_random_source,
    color_jitter,
    linear_motion_blur,
    point_noise,
    rgb_add_noise,
)


def _image(seed=0, size=24):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_color_jitter_equals_torchvision_with_same_torch_state(seed):
    image = _image(seed)
    torch.manual_seed(seed)  # oracle only: torchvision draws from the global torch RNG
    expected = np.array(T.ColorJitter(0.4, 0.4, 0.4, 0.3)(Image.fromarray(image)))
    result = color_jitter(image, torch.Generator().manual_seed(seed))
    np.testing.assert_array_equal(result, expected)


def test_color_jitter_draw_count_is_randperm_then_four_uniforms():
    generator = torch.Generator().manual_seed(5)
    color_jitter(_image(), generator)
    replay = torch.Generator().manual_seed(5)
    torch.randperm(4, generator=replay)
    for _ in range(4):
        torch.empty(1).uniform_(0, 1, generator=replay)
    assert torch.rand(1, generator=generator).item() == torch.rand(1, generator=replay).item()


class _Recorder:
    """A RandomSource returning fixed values and recording each call."""

    def __init__(self, uniform):
        self.uniform = uniform
        self.calls = []

    def random(self):
        self.calls.append("random")
        return self.uniform

    def integers(self, low, high=None):
        self.calls.append(f"integers({low})")
        return 0

    def standard_normal(self, size):
        self.calls.append(f"standard_normal{tuple(size)}")
        return np.zeros(size)

    def normal(self, loc, scale, size):
        self.calls.append(f"normal({loc},{scale}){tuple(size)}")
        return np.zeros(size)


def test_rgb_add_noise_draw_order_all_branches():
    recorder = _Recorder(0.9)  # every "> 0.8" gate passes, "> 0.2" picks the 3x3 blur and integers(15)
    rgb_add_noise(_image(), recorder)
    shape = "(24, 24, 3)"
    assert recorder.calls == [
        "random",  # HSV gate (> 0)
        "random",
        "random",  # S factor, V factor
        "random",
        "random",  # sharpen gate, centre weight
        "random",
        "random",
        "random",  # motion-blur gate, angle, length
        "random",
        "random",
        "random",  # Gaussian-blur gate, kernel-size choice, sigma
        "random",
        "integers(15)",
        f"standard_normal{shape}",  # noise-sigma choice, sigma, noise
        "random",
        f"normal(0.0,7.0){shape}",  # extra-noise gate, noise
    ]


def test_rgb_add_noise_draw_order_no_optional_branch():
    recorder = _Recorder(0.1)
    rgb_add_noise(_image(), recorder)
    assert recorder.calls == [
        "random",
        "random",
        "random",
        "random",
        "random",
        "random",
        "random",
        "integers(25)",
        "standard_normal(24, 24, 3)",
        "random",
    ]


def test_rgb_add_noise_hsv_only_branch_by_hand():
    # random() = 0.5: HSV factors S 1.35, V 1.25; no sharpen/motion/blur; sigma = integers(15) = 0.
    image = _image(3)
    result = rgb_add_noise(image, _Recorder(0.5))
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float64)
    hsv[:, :, 1] = np.minimum(np.floor(hsv[:, :, 1] * (0.5 * 0.2 + 1.25)), 255)
    hsv[:, :, 2] = np.minimum(np.floor(hsv[:, :, 2] * (0.5 * 0.2 + 1.15)), 255)
    expected = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    np.testing.assert_array_equal(result, expected)


class _NoiseRecorder(_Recorder):
    """A `_Recorder` whose Gaussian draw is a fixed array and whose integer draw is a fixed sigma."""

    def __init__(self, uniform, noise, sigma):
        super().__init__(uniform)
        self.noise, self.sigma = noise, sigma

    def integers(self, low, high=None):
        super().integers(low, high)
        return self.sigma

    def standard_normal(self, size):
        super().standard_normal(size)
        return self.noise.copy()


def test_rgb_add_noise_gaussian_step_by_hand():
    # random() = 0.5: the HSV step only, then sigma = 13 and clip(image + 13·noise) in float64, both ends clipped.
    image = _image(4)
    noise = np.random.default_rng(2).standard_normal(image.shape) * 20.0
    result = rgb_add_noise(image, _NoiseRecorder(0.5, noise, 13))
    hsv_only = rgb_add_noise(image, _Recorder(0.5))  # sigma 0: checked by hand above
    expected = np.clip(hsv_only.astype(np.float64) + noise * 13.0, 0.0, 255.0).astype(np.uint8)
    assert (expected == 0).any() and (expected == 255).any()
    np.testing.assert_array_equal(result, expected)


def test_rgb_add_noise_reproducible_and_legacy_compatible():
    image = _image(1)
    first = rgb_add_noise(image, np.random.default_rng(9))
    np.testing.assert_array_equal(first, rgb_add_noise(image, np.random.default_rng(9)))
    legacy = rgb_add_noise(image, as_random_source(np.random.RandomState(9)))
    np.testing.assert_array_equal(legacy, rgb_add_noise(image, as_random_source(np.random.RandomState(9))))
    assert first.dtype == np.uint8 and first.shape == image.shape


def test_point_noise_is_clipped_gaussian():
    noise = point_noise(4000, np.random.default_rng(2))
    expected = np.clip(0.001 * np.random.default_rng(2).standard_normal((4000, 3)), -0.005, 0.005)
    np.testing.assert_array_equal(noise, expected)
    assert noise.dtype == np.float64 and np.abs(noise).max() <= 0.005


def test_linear_motion_blur_horizontal_kernel_by_hand():
    # angle 0, length 2: a = int(1 * 2 * 2) = 4, line from (2, 2) to (4, 2) clipped to the 4x4 kernel:
    # kernel[2, 2] = kernel[2, 3] = 1/2.
    image = _image(4, size=12)
    kernel = np.zeros((4, 4))
    kernel[2, 2] = kernel[2, 3] = 0.5
    np.testing.assert_array_equal(linear_motion_blur(image, 0, 2), cv2.filter2D(image, -1, kernel))


def test_linear_motion_blur_zero_length_is_identity():
    image = _image(5)
    assert linear_motion_blur(image, 45, 0) is image


def test_as_random_source_rejects_other_types():
    with pytest.raises(TypeError, match="expected numpy.random.Generator or RandomState; got NoneType"):
        as_random_source(None)
