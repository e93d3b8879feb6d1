"""Writer helpers against brute-force and hand-worked oracles (FPS, SPD mug fix, boxes, detections)."""

import numpy as np

from cleanpose.data.synth import writer_nocs


def test_farthest_point_indices_brute_force():
    points = np.random.default_rng(0).normal(size=(60, 3))
    picks = writer_nocs.farthest_point_indices(points, 12)
    expected = [0]
    for _ in range(11):
        distances = np.min([[np.sum((p - points[j]) ** 2) for j in expected] for p in points], axis=1)
        expected.append(int(np.argmax(distances)))
    assert picks.tolist() == expected


def test_mug_fix_hand_worked():
    # body spans x ∈ [−0.3, 0.3] (handle to x = 0.5), z ∈ [−0.3, 0.3]: shift = (−0.3 − 0.3)/2 − (−0.3) = 0 ...
    points = np.array([[-0.3, 0.0, -0.3], [0.5, 0.2, 0.3], [0.0, -0.2, 0.0]])
    fixed, shift, scale = writer_nocs.mug_fix(points)
    np.testing.assert_allclose(shift, [0.0, 0.0, 0.0], atol=1e-15)
    # ... and for a body offset to x ∈ [−0.4, 0.2]: shift = −0.3 + 0.4 = 0.1 re-centres it
    points[:, 0] -= 0.1
    fixed, shift, scale = writer_nocs.mug_fix(points)
    np.testing.assert_allclose(shift, [0.1, 0.0, 0.0])
    size = 2 * np.abs(points + shift).max(axis=0)
    assert np.isclose(scale, 1 / np.linalg.norm(size))
    np.testing.assert_allclose(fixed, (points + shift) * scale)


def test_mask_bbox_exclusive_corners():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert writer_nocs.mask_bbox(mask).tolist() == [2, 3, 5, 9]


def test_simulated_detections_follow_ground_truth():
    instance_map = np.full((60, 80), 255, np.uint8)
    instance_map[10:40, 10:40] = 1
    instance_map[20:50, 50:75] = 2
    rates = {"hits": 0, "fp": 0}
    for seed in range(40):
        result = writer_nocs.simulate_detections(instance_map, [1, 2], [6, 1], 6, np.random.default_rng(seed))
        masks = result["pred_masks"]
        for j in range(masks.shape[2]):
            overlap = [
                (masks[:, :, j] & (instance_map == i)).sum() / (masks[:, :, j] | (instance_map == i)).sum()
                for i in (1, 2)
            ]
            if max(overlap) > 0.6:
                rates["hits"] += 1
                assert 0.55 <= result["pred_scores"][j] <= 1.0
            else:
                rates["fp"] += 1
                assert result["pred_scores"][j] <= 0.6
    assert 0.85 * 80 <= rates["hits"] <= 80 and rates["fp"] <= 30


def _two_object_frame(width, height, blocks):
    from cleanpose.data.synth.scene import Appearance, FrameArrays, PlacedObject, SceneSpec, build_library

    library = build_library("nocs", "real_train", 0, 1)
    plain = Appearance(np.zeros(3), np.zeros(3), 0, 1.0)
    objects = tuple(PlacedObject(library[i], 0.2, np.eye(3), np.zeros(3), plain) for i in (0, 5))
    scene = SceneSpec(objects, (), 0.8, plain, plain, plain, np.array([0.0, 1.0, 0.0]), 0.3)
    object_index = np.full((height, width), -1, np.int16)
    for k, (rows, columns) in enumerate(blocks):
        object_index[rows, columns] = k
    arrays = FrameArrays(
        np.zeros((height, width, 3), np.uint8),
        np.ones((height, width)),
        np.ones((height, width)),
        object_index,
        np.zeros((height, width, 3)),
        np.stack([np.eye(3)] * 2),
        np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]]),
        np.array([0.2, 0.3]),
        np.zeros(2, np.int64),
    )
    instance_map = np.full((height, width), 255, np.uint8)
    for k in range(2):
        instance_map[object_index == k] = k + 1
    return scene, arrays, instance_map


def test_frame_label_filters():
    scene, arrays, instance_map = _two_object_frame(
        80, 60, [(slice(0, 10), slice(0, 10)), (slice(20, 40), slice(30, 50))]
    )
    depth_mm = np.full((60, 80), 900, np.uint16)
    depth_mm[0:10, 0:4] = 0  # object 1 keeps 60 < 64 valid pixels -> skipped
    label = writer_nocs.frame_label(scene, arrays, [0, 1], instance_map, depth_mm)
    assert label["instance_ids"] == [2] and label["class_ids"] == [scene.objects[1].instance.class_id]
    assert label["bboxes"].tolist() == [[20, 30, 40, 50]]
    np.testing.assert_allclose(label["scales"], [0.3])
    np.testing.assert_allclose(label["translations"], [[0.1, 0.0, 1.0]])
    depth_mm[:] = 0
    assert writer_nocs.frame_label(scene, arrays, [0, 1], instance_map, depth_mm) is None  # nothing survives
    # a box 601 pixels wide discards the whole frame, even though the other instance is fine
    scene, arrays, instance_map = _two_object_frame(
        700, 30, [(slice(0, 10), slice(0, 601)), (slice(15, 30), slice(0, 20))]
    )
    assert writer_nocs.frame_label(scene, arrays, [0, 1], instance_map, np.full((30, 700), 900, np.uint16)) is None
    scene, arrays, instance_map = _two_object_frame(
        700, 30, [(slice(0, 10), slice(0, 600)), (slice(15, 30), slice(0, 20))]
    )
    kept = writer_nocs.frame_label(scene, arrays, [0, 1], instance_map, np.full((30, 700), 900, np.uint16))
    assert kept["instance_ids"] == [1, 2]


def test_frame_label_discards_tall_box():
    scene, arrays, instance_map = _two_object_frame(
        30, 450, [(slice(0, 441), slice(0, 10)), (slice(0, 20), slice(15, 30))]
    )
    assert writer_nocs.frame_label(scene, arrays, [0, 1], instance_map, np.full((450, 30), 900, np.uint16)) is None
