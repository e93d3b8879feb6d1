"""The result pickles `cleanpose test` writes: the reference's pose/scale convention, hand-derived."""

import numpy as np
import torch

from cleanpose.engine.test import pose_result


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
