"""Sample-pipeline steps against hand cases, float64 recomputation and brute force."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cleanpose.data.augment import as_random_source
from cleanpose.data.sample import (
    CropWindow,
    backproject_choice,
    canonicalize_rotation,
    crop_resize,
    crop_window,
    normalize_rgb,
    object_coordinates,
    outlier_mask,
    remap_choose,
    sample_indices,
    window_indices,
)

# ---------------------------------------------------------------------------------------------
# crop_window (get_bbox, docs/data_formats.md §3.4)


@pytest.mark.parametrize(
    "bbox, size, expected",
    [
        # 30x20 box: ws = (30//40+1)*40 = 40, centre (115, 210) -> [95,135) x [190,230)
        ([100, 200, 130, 220], (480, 640), (95, 135, 190, 230)),
        # side exactly 40 -> ws = 80 (always strictly larger than the box)
        ([100, 100, 140, 140], (480, 640), (80, 160, 80, 160)),
        # top-left corner: shifted down and right by the overshoot
        ([0, 0, 10, 10], (480, 640), (0, 40, 0, 40)),
        # bottom-right corner: shifted up and left
        ([470, 630, 480, 640], (480, 640), (440, 480, 600, 640)),
        # 500 px tall box: ws capped at 440; centre (280, 150): rows [60, 500) shifted up by 20,
        # cols [-70, 370) shifted right by 70
        ([30, 100, 530, 200], (480, 640), (40, 480, 0, 440)),
        # HouseCat6D limits: 852 x 1096, a box near the right edge
        ([400, 1080, 430, 1096], (852, 1096), (395, 435, 1056, 1096)),
        # odd centre sums: (101 + 130) // 2 = 115, (201 + 220) // 2 = 210
        ([101, 201, 130, 220], (480, 640), (95, 135, 190, 230)),
    ],
)
def test_crop_window_hand_cases(bbox, size, expected):
    window = crop_window(np.array(bbox, dtype=np.int32), *size)
    assert tuple(window) == expected
    assert window.size == window.cmax - window.cmin


def test_crop_window_cap_at_440_cuts_large_objects():
    window = crop_window([0, 0, 479, 639], 480, 640)
    assert window.size == 440
    # centre (239, 319) -> [19, 459) x [99, 539): the box is cut
    assert tuple(window) == (19, 459, 99, 539)


# ---------------------------------------------------------------------------------------------
# choose indices and the point-count rule


def test_window_indices_are_row_major_in_window():
    mask = np.zeros((10, 12), bool)
    mask[3, 5] = mask[4, 2] = mask[9, 9] = True
    window = CropWindow(2, 6, 1, 5)  # 4 x 4 window, contains (3, 5)? no: cols 1..4 -> only (4, 2)
    np.testing.assert_array_equal(window_indices(mask, window), [(4 - 2) * 4 + (2 - 1)])
    window = CropWindow(2, 10, 2, 10)  # 8 x 8: (3,5) -> 1*8+3, (4,2) -> 2*8+0, (9,9) -> 7*8+7
    np.testing.assert_array_equal(window_indices(mask, window), [11, 16, 63])


def test_sample_indices_with_replacement_when_too_few():
    rng = np.random.default_rng(3)
    drawn = sample_indices(5, 1024, rng)
    assert drawn.shape == (1024,) and drawn.dtype == np.int64
    assert set(drawn.tolist()) == set(range(5))  # repetition, all candidates hit with 1024 draws


def test_sample_indices_equal_count_uses_replacement():
    # The reference rule is "<=": exactly num_points candidates are drawn WITH replacement.
    drawn = sample_indices(8, 8, np.random.default_rng(0))
    expected = np.random.default_rng(0).choice(8, 8, replace=True)
    np.testing.assert_array_equal(drawn, expected)


def test_sample_indices_without_replacement_when_enough():
    drawn = sample_indices(3000, 1024, np.random.default_rng(1))
    assert len(np.unique(drawn)) == 1024 and drawn.max() < 3000
    # Order is the drawn order (not sorted), identical to a direct choice call.
    np.testing.assert_array_equal(drawn, np.random.default_rng(1).choice(3000, 1024, replace=False))
    assert not np.all(np.diff(drawn) > 0)


def test_sample_indices_legacy_state_matches_numpy_global_calls():
    # The reference calls np.random.choice(len, 1024[, replace=False]) on the global RandomState.
    state = np.random.RandomState(11)
    np.testing.assert_array_equal(
        sample_indices(50, 1024, as_random_source(state)), np.random.RandomState(11).choice(50, 1024)
    )
    state = np.random.RandomState(12)
    np.testing.assert_array_equal(
        sample_indices(2000, 1024, as_random_source(state)),
        np.random.RandomState(12).choice(2000, 1024, replace=False),
    )


def test_sample_indices_rejects_empty():
    with pytest.raises(ValueError, match="cannot sample 1024 points from 0 candidates"):
        sample_indices(0, 1024, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# back-projection and choose remap


def test_backproject_choice_matches_float64_hand_computation():
    rng = np.random.default_rng(0)
    depth = rng.uniform(300, 2000, (48, 64)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = 0
    mask = np.zeros(depth.shape, bool)
    mask[10:30, 20:45] = True
    mask &= depth > 0
    intrinsics = np.array([[591.0125, 0, 322.525], [0, 590.16775, 244.11084], [0, 0, 1]])
    window = CropWindow(5, 45, 15, 55)
    candidates = window_indices(mask, window)
    choice = rng.choice(len(candidates), 100)
    points = backproject_choice(depth, intrinsics, mask, window, choice)
    rows, cols = np.divmod(candidates[choice], window.size)
    rows, cols = rows + window.rmin, cols + window.cmin
    z = depth[rows, cols].astype(np.float64) / 1000.0
    expected = np.stack([(cols - 322.525) * z / 591.0125, (rows - 244.11084) * z / 590.16775, z], axis=1)
    assert points.dtype == np.float32
    np.testing.assert_allclose(points, expected, rtol=1e-6, atol=1e-9)
    # Bit-identity with the reference's rounding path: z in float32 (depth/1000), rest float64 -> float32.
    z32 = depth / np.float32(1000.0)
    full = np.stack(
        [
            (np.arange(64)[None, :] - 322.525) * z32 / 591.0125,
            (np.arange(48)[:, None] - 244.11084) * z32 / 590.16775,
            np.broadcast_to(z32, z32.shape),
        ],
        axis=2,
    ).astype(np.float32)
    gathered = full[window.rmin : window.rmax, window.cmin : window.cmax].reshape(-1, 3)[candidates[choice]]
    np.testing.assert_array_equal(points, gathered)


def test_remap_choose_hand_computation():
    window = CropWindow(0, 80, 0, 80)  # ratio 224/80 = 2.8
    choose = np.array([0, 79, 80, 81, 6399, 3 * 80 + 7])
    # (row, col): (0,0) (0,79) (1,0) (1,1) (79,79) (3,7)
    expected = [0, 221, 2 * 224, 2 * 224 + 2, 221 * 224 + 221, 8 * 224 + 19]
    np.testing.assert_array_equal(remap_choose(choose, window, 224), expected)
    assert remap_choose(choose, window, 224).dtype == np.int64


# ---------------------------------------------------------------------------------------------
# rgb


def test_crop_resize_constant_and_normalize():
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[10:50, 20:60] = (255, 128, 0)
    crop = crop_resize(rgb, CropWindow(10, 50, 20, 60), 16)
    assert crop.shape == (16, 16, 3)
    np.testing.assert_array_equal(crop, np.broadcast_to(np.array([255, 128, 0], np.uint8), (16, 16, 3)))
    tensor = normalize_rgb(crop)
    expected = (np.array([255, 128, 0]) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor[:, 3, 5].numpy(), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# targets


def _rot_y(angle):
    return Rotation.from_euler("y", angle).as_matrix()


def test_canonicalize_removes_rotation_about_object_y():
    base = Rotation.from_euler("xyz", [0.3, -0.7, 1.1]).as_matrix()
    canonical = canonicalize_rotation(base.astype(np.float32), True)
    for angle in (0.4, -2.0, 3.0):
        np.testing.assert_allclose(canonicalize_rotation(base @ _rot_y(angle), True), canonical, atol=1e-6)
    # The canonical form has R02 == R20 (b = 0) and is still a rotation with the same y column.
    assert abs(canonical[0, 2] - canonical[2, 0]) < 1e-6
    np.testing.assert_allclose(canonical[:, 1], base[:, 1], atol=1e-6)
    np.testing.assert_allclose(canonical @ canonical.T, np.eye(3), atol=1e-6)
    # Non-symmetric: unchanged.
    np.testing.assert_array_equal(canonicalize_rotation(base, False), base)


def test_object_coordinates_float64_recomputation():
    rng = np.random.default_rng(4)
    rotation = Rotation.random(random_state=5).as_matrix()
    translation = np.array([0.1, -0.05, 0.8], np.float32)
    size = np.array([0.1, 0.2, 0.15], np.float32)
    points = rng.normal(0, 0.05, (50, 3)) + translation
    result = object_coordinates(points, rotation, translation, size)
    expected = (rotation.T @ (points - translation.astype(np.float64)).T).T / np.linalg.norm(size.astype(np.float64))
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-9)


def test_outlier_mask_matches_brute_force():
    rng = np.random.default_rng(6)
    coordinates = rng.uniform(-0.6, 0.6, (300, 3))
    model = rng.uniform(-0.3, 0.3, (200, 3)).astype(np.float32)
    distances = np.linalg.norm(coordinates[:, None, :] - model[None, :, :].astype(np.float64), axis=2).min(axis=1)
    result = outlier_mask(coordinates, model, 0.1)
    np.testing.assert_array_equal(result, distances < 0.1)
    assert 0 < result.sum() < len(result)  # both inliers and outliers present


# ---------------------------------------------------------------------------------------------
# build_instance: the chain shared by every dataset and by predict


def _flat_frame(count_pixels, height=60, width=80, depth_mm=800.0):
    """A frame with `count_pixels` object pixels in row 30 from column 20, constant depth, one hole."""
    depth = np.full((height, width), depth_mm, np.float32)
    depth[30, 20] = 0.0  # a hole inside the mask: never sampled
    mask = np.zeros((height, width), bool)
    mask[30, 20 : 21 + count_pixels] = True  # one more pixel than counted: the hole
    rgb = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3).astype(np.uint8)
    return depth, mask, rgb


def test_build_instance_points_against_float64_pinhole():
    from cleanpose.data.sample import build_instance

    depth, mask, rgb = _flat_frame(20)
    intrinsics = np.array([[500.0, 0, 40.0], [0, 510.0, 29.5], [0, 0, 1]])
    built = build_instance(
        depth,
        intrinsics,
        mask,
        [30, 20, 31, 41],
        rgb,
        4,
        num_points=10,
        image_size=16,
        rng=np.random.default_rng(1),
        min_window_points=16,
    )
    assert built.num_pixels == 20 and built.window == crop_window([30, 20, 31, 41], 60, 80)
    sample = built.sample
    assert sample["category_label"].tolist() == [4] and sample["pts"].dtype == torch.float32
    # 10 of the 20 valid pixels (columns 21..40 of row 30) without replacement: every point lies on the
    # ray of one of them at z = 0.8 m (float64 pinhole by hand).
    cols = (sample["pts"][:, 0].double().numpy() * 500.0 / 0.8) + 40.0
    rows = (sample["pts"][:, 1].double().numpy() * 510.0 / 0.8) + 29.5
    np.testing.assert_allclose(sample["pts"][:, 2].numpy(), 0.8, rtol=1e-7)
    np.testing.assert_allclose(rows, 30.0, atol=1e-4)
    assert len(set(np.round(cols).astype(int))) == 10 and set(np.round(cols).astype(int)) <= set(range(21, 41))
    # choose points back at the same pixels in the resized crop.
    window = built.window
    ratio = 16 / window.size
    expected = np.floor((30 - window.rmin) * ratio) * 16 + np.floor((np.round(cols) - window.cmin) * ratio)
    np.testing.assert_array_equal(sample["choose"].numpy(), expected.astype(np.int64))


@pytest.mark.parametrize(
    "count, rules, reason",
    [
        (0, {}, "empty_instance"),
        (16, {"min_window_points": 16}, "few_points"),
        (16, {"min_image_points": 16}, "few_points"),
        (17, {"min_window_points": 16}, None),
        (17, {"min_image_points": 16}, None),
    ],
)
def test_build_instance_skip_rules(count, rules, reason):
    from cleanpose.data.sample import InstanceSkipped, build_instance

    depth, mask, rgb = _flat_frame(count)
    calls = []

    def read_rgb():
        calls.append(1)
        return rgb

    arguments = dict(num_points=8, image_size=8, rng=np.random.default_rng(0), **rules)
    if reason is None:
        assert build_instance(depth, np.eye(3), mask, [30, 20, 31, 38], read_rgb, 0, **arguments).num_pixels == count
        assert calls == [1]
        return
    with pytest.raises(InstanceSkipped) as caught:
        build_instance(depth, np.eye(3), mask, [30, 20, 31, 38], read_rgb, 0, **arguments)
    assert caught.value.reason == reason and calls == []  # the colour image is never read for a skip


def test_build_instance_window_rule_ignores_pixels_outside_the_window():
    from cleanpose.data.sample import InstanceSkipped, build_instance

    depth, mask, rgb = _flat_frame(30, height=120)
    # A box far below the pixels (row 30): its 40 x 40 window covers rows [80, 120).
    arguments = dict(num_points=8, image_size=8, rng=np.random.default_rng(0))
    with pytest.raises(InstanceSkipped, match="empty_instance"):
        build_instance(depth, np.eye(3), mask, [100, 70, 110, 80], rgb, 0, min_image_points=16, **arguments)
