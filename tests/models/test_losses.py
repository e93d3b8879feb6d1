"""Tests of the training losses: hand-derived tiny cases and float64 brute-force loops."""

import math

import pytest
import torch

from cleanpose.errors import DataFormatError
from cleanpose.models.losses import (
    CleanPoseLoss,
    chamfer_distance,
    delta_loss,
    distillation_loss,
    diversity_loss,
    keypoint_coverage_loss,
    masked_chamfer_distance,
    nocs_loss,
    nocs_target,
    pose_loss,
    smooth_l1_distance,
    split_batch_loss,
)
from tests.models.test_attention import assert_close

ROT_Z_90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def _dist(a, b):
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


# ----------------------------------------------------------------------------------------------------------
# brute-force loops, written from docs/model.md §12


def brute_pose(rotation, translation, size, rotation_gt, translation_gt, size_gt):
    batch = rotation.shape[0]
    rotation_term = sum(_dist(rotation[b, :, j], rotation_gt[b, :, j]) for b in range(batch) for j in range(3))
    return (rotation_term / (3 * batch) + sum(_dist(translation[b], translation_gt[b]) for b in range(batch)) / batch
            + sum(_dist(size[b], size_gt[b]) for b in range(batch)) / batch)  # fmt: skip


def brute_coverage(keypoints, points):
    values = [min(_dist(k, p) for p in points[b]) for b in range(len(keypoints)) for k in keypoints[b]]
    return sum(values) / len(values)


def brute_smooth_l1(prediction, target, threshold=0.1):
    total = 0.0
    for b in range(prediction.shape[0]):
        for k in range(prediction.shape[1]):
            for axis in range(3):
                d = abs(float(prediction[b, k, axis]) - float(target[b, k, axis]))
                total += d * d / (2 * threshold) if d <= threshold else d - threshold / 2
    return total / (prediction.shape[0] * prediction.shape[1])


def brute_nocs_target(keypoints, rotation_gt, translation_gt, size_gt):
    target = torch.empty_like(keypoints)
    for b in range(keypoints.shape[0]):
        scale = math.sqrt(sum(float(v) ** 2 for v in size_gt[b])) + 1e-8
        for k in range(keypoints.shape[1]):
            for j in range(3):  # (x - t)/scale · R: component j = Σ_i v_i R[i, j]
                target[b, k, j] = sum((float(keypoints[b, k, i]) - float(translation_gt[b, i])) / scale
                                      * float(rotation_gt[b, i, j]) for i in range(3))  # fmt: skip
    return target


def brute_diversity(keypoints, threshold=0.01):
    batch, num = keypoints.shape[:2]
    total = 0.0
    for b in range(batch):
        penalty = 0.0
        for i in range(num):
            for j in range(num):
                d = _dist(keypoints[b, i], keypoints[b, j]) + (1.0 if i == j else 0.0)
                penalty += 1 - min(d, threshold) / threshold
        total += penalty / (num * (num - 1))
    return total / batch


def brute_chamfer_single(points_1, points_2):
    forward = sum(min(_dist(p, q) for q in points_2) for p in points_1) / len(points_1)
    backward = sum(min(_dist(p, q) for p in points_1) for q in points_2) / len(points_2)
    return 0.5 * forward + 0.5 * backward


def brute_masked_chamfer(points, reconstruction, mask):
    total = 0.0
    for b in range(points.shape[0]):
        selected = [p for p, keep in zip(points[b], mask[b]) if keep]
        if selected:
            total += brute_chamfer_single(selected, reconstruction[b])
    return total / points.shape[0]


# ----------------------------------------------------------------------------------------------------------


def test_pose_loss_hand_case_and_brute_force():
    value = pose_loss(torch.eye(3, dtype=torch.float64)[None], _t([[0, 0, 0]]), _t([[1, 1, 1]]),
                      ROT_Z_90[None], _t([[3, 4, 0]]), _t([[1, 1, 1]]))  # fmt: skip
    assert value.item() == pytest.approx(2 * math.sqrt(2) / 3 + 5, abs=1e-12)
    generator = torch.Generator().manual_seed(0)
    args = [torch.randn(3, *shape, generator=generator, dtype=torch.float64) for shape in
            [(3, 3), (3,), (3,), (3, 3), (3,), (3,)]]  # fmt: skip
    assert pose_loss(*args).item() == pytest.approx(brute_pose(*args), abs=1e-12)


def test_keypoint_coverage_hand_case_and_brute_force():
    value = keypoint_coverage_loss(_t([[[0.5, 0, 0], [2, 0, 0]]]), _t([[[0, 0, 0], [1, 0, 0]]]))
    assert value.item() == pytest.approx(0.75, abs=1e-12)
    generator = torch.Generator().manual_seed(1)
    keypoints = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    points = torch.randn(2, 9, 3, generator=generator, dtype=torch.float64)
    assert keypoint_coverage_loss(keypoints, points).item() == pytest.approx(brute_coverage(keypoints, points),
                                                                             abs=1e-12)  # fmt: skip


def test_smooth_l1_hand_case_and_brute_force():
    value = smooth_l1_distance(_t([[[0.05, 0.2, 0.0], [0.1, -0.3, 0.0]]]), torch.zeros(1, 2, 3, dtype=torch.float64))
    # (0.05²/0.2 + (0.2 - 0.05) + 0) and (0.1²/0.2 + (0.3 - 0.05) + 0), averaged over the 2 keypoints
    assert value.item() == pytest.approx(((0.0125 + 0.15) + (0.05 + 0.25)) / 2, abs=1e-12)
    generator = torch.Generator().manual_seed(2)
    prediction = 0.2 * torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    target = 0.2 * torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    assert smooth_l1_distance(prediction, target).item() == pytest.approx(brute_smooth_l1(prediction, target),
                                                                          abs=1e-12)  # fmt: skip


def test_nocs_target_inverts_the_pose_and_loss_matches_brute_force():
    nocs = _t([[[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]]])
    translation, size = _t([[1.0, 2.0, 3.0]]), _t([[3.0, 4.0, 0.0]])
    keypoints = translation[:, None] + 5.0 * nocs @ ROT_Z_90.T
    assert_close(nocs_target(keypoints, ROT_Z_90[None], translation, size), nocs, atol=1e-8)
    generator = torch.Generator().manual_seed(3)
    keypoints = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    rotation = torch.linalg.qr(torch.randn(2, 3, 3, generator=generator, dtype=torch.float64)).Q
    translation = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    size = torch.rand(2, 3, generator=generator, dtype=torch.float64)
    predicted = 0.3 * torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    target = brute_nocs_target(keypoints, rotation, translation, size)
    assert_close(nocs_target(keypoints, rotation, translation, size), target)
    assert nocs_loss(predicted, keypoints, rotation, translation, size).item() == pytest.approx(
        brute_smooth_l1(predicted, target), abs=1e-12
    )


def test_nocs_loss_moves_the_keypoints_through_its_target():
    keypoints = torch.tensor([[[0.3, 0.1, 0.0]]], requires_grad=True)
    nocs_loss(torch.zeros(1, 1, 3), keypoints, torch.eye(3)[None], torch.zeros(1, 3), torch.ones(1, 3)).backward()
    assert bool(keypoints.grad.abs().sum() > 0)


def test_diversity_hand_case_and_brute_force():
    close = _t([[[0.0, 0.0, 0.0], [0.005, 0.0, 0.0]]])
    assert diversity_loss(close).item() == pytest.approx(0.5, abs=1e-12)  # (0.5 + 0.5) / (2·1)
    assert diversity_loss(_t([[[0.0, 0.0, 0.0], [0.02, 0.0, 0.0]]])).item() == 0.0
    generator = torch.Generator().manual_seed(4)
    keypoints = 0.01 * torch.randn(3, 6, 3, generator=generator, dtype=torch.float64)
    assert diversity_loss(keypoints).item() == pytest.approx(brute_diversity(keypoints), abs=1e-12)


def test_diversity_gives_no_gradient_to_clamped_pairs():
    keypoints = torch.tensor([[[0.0, 0.0, 0.0], [0.02, 0.0, 0.0], [0.025, 0.0, 0.0]]], requires_grad=True)
    diversity_loss(keypoints).backward()
    assert keypoints.grad[0, 0].abs().sum().item() == 0.0  # point 0 is farther than 0.01 from both others
    assert keypoints.grad[0, 1].abs().sum().item() > 0


def test_chamfer_hand_case_and_brute_force():
    value = chamfer_distance(_t([[[0, 0, 0]]]), _t([[[1, 0, 0], [3, 0, 0]]]))
    assert value.item() == pytest.approx(0.5 * 1 + 0.5 * 2, abs=1e-12)
    generator = torch.Generator().manual_seed(5)
    points_1 = torch.randn(2, 7, 3, generator=generator, dtype=torch.float64)
    points_2 = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    expected = sum(brute_chamfer_single(points_1[b], points_2[b]) for b in range(2)) / 2
    assert chamfer_distance(points_1, points_2).item() == pytest.approx(expected, abs=1e-12)


def test_masked_chamfer_skips_empty_objects_but_counts_them():
    generator = torch.Generator().manual_seed(6)
    points = torch.randn(3, 8, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    reconstruction = torch.randn(3, 6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 8, generator=generator) > 0.4
    mask[1] = False  # an object without valid points
    mask[0, 0] = True
    value = masked_chamfer_distance(points, reconstruction, mask)
    assert value.item() == pytest.approx(brute_masked_chamfer(points.detach(), reconstruction.detach(), mask),
                                         abs=1e-12)  # fmt: skip
    value.backward()
    assert bool(torch.isfinite(points.grad).all() and torch.isfinite(reconstruction.grad).all())
    assert points.grad[1].abs().sum().item() == 0.0 and reconstruction.grad[1].abs().sum().item() == 0.0
    assert points.grad[0][~mask[0]].abs().sum().item() == 0.0
    # hand case: one object with points {0, far-but-masked} against {1}; one empty object; divisor 2
    hand = masked_chamfer_distance(
        _t([[[0, 0, 0], [9, 0, 0]], [[1, 1, 1], [2, 2, 2]]]),
        _t([[[1, 0, 0]], [[0, 0, 0]]]),
        torch.tensor([[True, False], [False, False]]),
    )
    assert hand.item() == pytest.approx((0.5 * 1 + 0.5 * 1) / 2, abs=1e-12)
    assert masked_chamfer_distance(points, reconstruction, torch.zeros(3, 8, dtype=torch.bool)).item() == 0.0


def test_delta_and_distillation_hand_cases():
    assert delta_loss(_t([[[3, 4, 0], [0, 0, 1]]])).item() == pytest.approx(3.0, abs=1e-12)
    assert distillation_loss(_t([[1, 2, 2], [0, 0, 0]]), _t([[0, 0, 0], [0, 3, 4]])).item() == pytest.approx(
        4.0, abs=1e-12
    )


# ----------------------------------------------------------------------------------------------------------


def _fake_step(generator, batch=4, num_points=12, num_keypoints=3, per_keypoint=2):
    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    outputs = {
        "pred_rotation": torch.linalg.qr(rand(batch, 3, 3)).Q,
        "pred_translation": rand(batch, 3),
        "pred_size": rand(batch, 3).abs(),
        "pred_kpt_3d": 0.01 * rand(batch, num_keypoints, 3),
        "pred_kpt_nocs": 0.2 * rand(batch, num_keypoints, 3),
        "recon_model": 0.05 * rand(batch, num_keypoints * per_keypoint, 3),
        "recon_delta": 0.01 * rand(batch, num_keypoints * per_keypoint, 3),
        "distillation_pointnet": rand(batch, 5),
        "distillation_ulip": rand(batch, 5),
    }
    labels = {
        "pts": 0.05 * rand(batch, num_points, 3),
        "rotation_label": torch.linalg.qr(rand(batch, 3, 3)).Q,
        "translation_label": rand(batch, 3),
        "size_label": rand(batch, 3).abs(),
        "pc_mask": torch.rand(batch, num_points, generator=generator) > 0.3,
    }
    return outputs, labels


def _brute_terms(outputs, labels, object_aware=True):
    keypoints = outputs["pred_kpt_3d"]
    target = brute_nocs_target(keypoints, labels["rotation_label"], labels["translation_label"], labels["size_label"])
    if object_aware:
        reconstruction = brute_masked_chamfer(labels["pts"], outputs["recon_model"], labels["pc_mask"])
    else:
        batch = labels["pts"].shape[0]
        reconstruction = sum(brute_chamfer_single(labels["pts"][b], outputs["recon_model"][b]) for b in range(batch))
        reconstruction /= batch
    deltas = outputs["recon_delta"]
    student, teacher = outputs["distillation_pointnet"], outputs["distillation_ulip"]
    return {
        "pose": brute_pose(outputs["pred_rotation"], outputs["pred_translation"], outputs["pred_size"],
                           labels["rotation_label"], labels["translation_label"], labels["size_label"]),
        "nocs": brute_smooth_l1(outputs["pred_kpt_nocs"], target),
        "keypoint_coverage": brute_coverage(keypoints, labels["pts"]),
        "diversity": brute_diversity(keypoints),
        "reconstruction": reconstruction,
        "delta": sum(_dist(d, (0, 0, 0)) for row in deltas for d in row) / (deltas.shape[0] * deltas.shape[1]),
        "distillation": sum(_dist(s, t) for s, t in zip(student, teacher)) / student.shape[0],
    }  # fmt: skip


WEIGHTS = {"pose": 0.3, "nocs": 2.0, "keypoint_coverage": 2.0, "diversity": 10.0, "reconstruction": 15.0,
           "delta": 1.0, "distillation": 0.01}  # fmt: skip


@pytest.mark.parametrize("object_aware", [True, False])
def test_clean_pose_loss_terms_and_total(object_aware):
    outputs, labels = _fake_step(torch.Generator().manual_seed(7))
    result = CleanPoseLoss(object_aware=object_aware)(outputs, labels)
    expected = _brute_terms(outputs, labels, object_aware)
    assert set(result) == set(expected) | {"total"}
    for name, value in expected.items():
        assert result[name].item() == pytest.approx(value, abs=1e-12), name
    assert result["total"].item() == pytest.approx(sum(WEIGHTS[k] * v for k, v in expected.items()), abs=1e-12)


def test_clean_pose_loss_weights_and_missing_keys():
    outputs, labels = _fake_step(torch.Generator().manual_seed(8))
    expected = _brute_terms(outputs, labels)
    loss = CleanPoseLoss(pose_weight=1.0, reconstruction_weight=0.0, distillation_weight=0.0)
    del outputs["distillation_pointnet"], outputs["distillation_ulip"]
    result = loss(outputs, labels)
    assert "distillation" not in result
    weights = dict(WEIGHTS, pose=1.0, reconstruction=0.0)
    total = sum(weights[k] * v for k, v in expected.items() if k != "distillation")
    assert result["total"].item() == pytest.approx(total, abs=1e-12)
    with pytest.raises(DataFormatError, match=r"missing outputs\['distillation_pointnet'\], "
                                              r"outputs\['distillation_ulip'\]"):  # fmt: skip
        CleanPoseLoss()(outputs, labels)
    del labels["pc_mask"]
    with pytest.raises(DataFormatError, match=r"missing batch\['pc_mask'\]"):
        loss(outputs, labels)
    assert "reconstruction" in CleanPoseLoss(object_aware=False, distillation_weight=0.0)(outputs, labels)


def test_split_batch_loss_weights_the_parts_by_size():
    generator = torch.Generator().manual_seed(9)
    outputs, labels = _fake_step(generator, batch=5)
    outputs["tensor_list"] = [torch.zeros(2, 3)]  # non-batch entries pass through untouched
    result = split_batch_loss(CleanPoseLoss(), outputs, labels, first_size=3)

    def part(mapping, selection):
        return {k: v[selection] for k, v in mapping.items() if torch.is_tensor(v)}

    first = _brute_terms(part(outputs, slice(0, 3)), part(labels, slice(0, 3)))
    second = _brute_terms(part(outputs, slice(3, 5)), part(labels, slice(3, 5)))
    for name in first:
        assert result[name].item() == pytest.approx((3 * first[name] + 2 * second[name]) / 5, abs=1e-12), name
    totals = [sum(WEIGHTS[k] * v for k, v in terms.items()) for terms in (first, second)]
    assert result["total"].item() == pytest.approx((3 * totals[0] + 2 * totals[1]) / 5, abs=1e-12)
    with pytest.raises(ValueError, match="first_size 5 must lie strictly between 0 and the batch size 5"):
        split_batch_loss(CleanPoseLoss(), outputs, labels, first_size=5)
