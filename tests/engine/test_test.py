"""The result pickles `cleanpose test` writes: the reference's pose/scale convention, hand-derived; the batched
forward over several images against one forward per image."""

import numpy as np
import pytest
import torch

from cleanpose.data.datasets import NocsTestDataset
from cleanpose.engine.test import load_items, pose_result, predict_items
from cleanpose.models.net import build_model
from tests.engine.conftest import TINY_MODEL


def test_pose_result_splits_size_into_norm_and_unit_extents():
    angle = np.deg2rad(30.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    outputs = {
        "pred_size": torch.tensor([[0.3, 0.4, 1.2]]),  # norm 1.3
        "pred_rotation": torch.tensor(rotation, dtype=torch.float32)[None],
        "pred_translation": torch.tensor([[0.1, -0.2, 0.9]]),
    }
    item = {"frame": "real/test/scene_1/0000", "pred_class_ids": [2], "pred_bboxes": np.zeros((1, 4)),
            "pred_scores": [0.7], "gt_class_ids": np.array([2])}  # fmt: skip
    result = pose_result(item, outputs)
    expected = np.eye(4)
    expected[:3, :3] = 1.3 * rotation
    expected[:3, 3] = [0.1, -0.2, 0.9]
    np.testing.assert_allclose(result["pred_RTs"][0], expected, atol=1e-6)
    np.testing.assert_allclose(result["pred_scales"][0], [0.3 / 1.3, 0.4 / 1.3, 1.2 / 1.3], atol=1e-6)
    assert result["image_path"] == "real/test/scene_1/0000" and result["gt_class_ids"].tolist() == [2]

    empty = pose_result(item, None)
    assert empty["pred_RTs"].shape == (0, 4, 4) and empty["pred_scales"].shape == (0, 3)


@pytest.mark.parametrize("use_front_door", [True, False])
def test_batched_prediction_equals_one_forward_per_image(synth_root, use_front_door):
    # Oracle: the model's own queue draw from the image's RandomState, one image per forward.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model({**TINY_MODEL, "use_front_door": use_front_door})
        model.queue.fill(torch.randn(model.queue.features.shape))
    model.eval()
    dataset = NocsTestDataset(synth_root, "real", image_size=28, num_points=48, detections="ground_truth", seed=5)
    items = load_items(dataset, range(len(dataset)), workers=0)
    empty = {
        **items[1],
        **{
            key: items[1][key][:0]
            for key in ("pts", "rgb", "choose", "category_label", "pred_class_ids", "pred_bboxes", "pred_scores")
        },
    }
    items.insert(2, empty)
    expected = []
    with torch.no_grad():
        for item in items:
            if item["pts"].shape[0] == 0:
                expected.append(pose_result(item, None))
                continue
            batch = {key: item[key] for key in ("rgb", "pts", "choose", "category_label")}
            state = np.random.RandomState(np.random.SeedSequence([5, int(item["index"])]).generate_state(1)[0])
            expected.append(pose_result(item, model(batch, queue_random_state=state)))
    assert sum(item["pts"].shape[0] for item in items) > 8
    for objects_per_forward in (64, 5, 1):
        pairs = list(predict_items(model, items, device=torch.device("cpu"), seed=5,
                                   objects_per_forward=objects_per_forward))  # fmt: skip
        assert [item for item, _ in pairs] == items
        for (_, result), oracle in zip(pairs, expected):
            assert result["pred_RTs"].shape == oracle["pred_RTs"].shape
            np.testing.assert_allclose(result["pred_RTs"], oracle["pred_RTs"], atol=2e-6)
            np.testing.assert_allclose(result["pred_scales"], oracle["pred_scales"], atol=2e-6)
