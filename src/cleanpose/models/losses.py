"""Training losses of CleanPose (docs/model.md §12; reference ``model/Net.py: Loss``, ``model/losses.py``).

Each term is a small pure function; :class:`CleanPoseLoss` weights and sums them. Distances are Euclidean
norms of coordinate differences, computed as ``‖a − b‖`` over the last axis exactly like the reference (no
squared-distance expansion), so values and the argmin picked by ``min`` agree with it.

Shapes: B objects, N observed points, K keypoints, M = P·K reconstructed points.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cleanpose.errors import DataFormatError

__all__ = [
    "CleanPoseLoss",
    "chamfer_distance",
    "delta_loss",
    "distillation_loss",
    "diversity_loss",
    "keypoint_coverage_loss",
    "masked_chamfer_distance",
    "nocs_loss",
    "nocs_target",
    "pose_loss",
    "smooth_l1_distance",
    "split_batch_loss",
]


def _pairwise_distances(points_1: torch.Tensor, points_2: torch.Tensor) -> torch.Tensor:
    # (B, N1, N2) Euclidean distances, the reference's difference-then-norm form.
    return torch.linalg.vector_norm(points_1.unsqueeze(2) - points_2.unsqueeze(1), dim=3)


def pose_loss(
    rotation: torch.Tensor,
    translation: torch.Tensor,
    size: torch.Tensor,
    rotation_gt: torch.Tensor,
    translation_gt: torch.Tensor,
    size_gt: torch.Tensor,
) -> torch.Tensor:
    """``mean_{b,j} ‖R̂[b,:,j] − R[b,:,j]‖ + mean_b ‖t̂_b − t_b‖ + mean_b ‖ŝ_b − s_b‖`` (reference ``PoseDis``).

    Args:
        rotation, rotation_gt: (B, 3, 3) float, camera-from-object; the norm runs over rows (per column).
        translation, translation_gt: (B, 3) float, metres, camera frame.
        size, size_gt: (B, 3) float, metres, full box extents.

    Returns:
        () float.
    """
    rotation_term = torch.linalg.vector_norm(rotation - rotation_gt, dim=1).mean()
    translation_term = torch.linalg.vector_norm(translation - translation_gt, dim=1).mean()
    size_term = torch.linalg.vector_norm(size - size_gt, dim=1).mean()
    return rotation_term + translation_term + size_term


def keypoint_coverage_loss(keypoints: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """One-sided Chamfer from keypoints to points: ``mean_{b,k} min_n ‖keypoints[b,k] − points[b,n]‖``.

    Pulls every keypoint onto the observed surface (reference ``cd_dis_k2p``).

    Args:
        keypoints: (B, K, 3) float, metres.
        points: (B, N, 3) float, metres, same frame (the reference uses the un-centred input points).

    Returns:
        () float, metres.
    """
    return _pairwise_distances(points, keypoints).min(dim=1).values.mean()


def smooth_l1_distance(prediction: torch.Tensor, target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Smooth-L1 per coordinate, summed over the last axis, averaged over the rest (reference ``SmoothL1Dis``).

    Per element with ``d = |prediction − target|``: ``d²/(2·threshold)`` if ``d ≤ threshold``, else
    ``d − threshold/2``.

    Args:
        prediction, target: (B, K, 3) float.
        threshold: switch point between the quadratic and the linear part.

    Returns:
        () float.
    """
    difference = torch.abs(prediction - target)
    quadratic = torch.pow(difference, 2) / (2.0 * threshold)
    linear = difference - threshold / 2.0
    return torch.where(difference > threshold, linear, quadratic).sum(dim=2).mean()


def nocs_target(
    keypoints: torch.Tensor, rotation_gt: torch.Tensor, translation_gt: torch.Tensor, size_gt: torch.Tensor
) -> torch.Tensor:
    """Ground-truth NOCS coordinates of predicted keypoints: ``((keypoints − t) / (‖s‖ + 1e-8)) · R``.

    Args:
        keypoints: (B, K, 3) float, metres, camera frame. Not detached: the NOCS loss also moves the
            keypoints, as in the reference (docs/model.md Q10).
        rotation_gt: (B, 3, 3) float, camera-from-object.
        translation_gt: (B, 3) float, metres.
        size_gt: (B, 3) float, metres; ``‖s‖`` is the NOCS scale (box diagonal).

    Returns:
        (B, K, 3) float, NOCS units.
    """
    scale = torch.linalg.vector_norm(size_gt, dim=1).view(-1, 1, 1)
    return (keypoints - translation_gt.unsqueeze(1)) / (scale + 1e-8) @ rotation_gt


def nocs_loss(
    keypoints_nocs: torch.Tensor,
    keypoints: torch.Tensor,
    rotation_gt: torch.Tensor,
    translation_gt: torch.Tensor,
    size_gt: torch.Tensor,
    threshold: float = 0.1,
) -> torch.Tensor:
    """:func:`smooth_l1_distance` between predicted keypoint NOCS and :func:`nocs_target`.

    Args:
        keypoints_nocs: (B, K, 3) float, predicted NOCS coordinates.
        keypoints: (B, K, 3) float, metres, camera frame.
        rotation_gt, translation_gt, size_gt: as in :func:`nocs_target`.
        threshold: smooth-L1 switch point.

    Returns:
        () float.
    """
    return smooth_l1_distance(keypoints_nocs, nocs_target(keypoints, rotation_gt, translation_gt, size_gt), threshold)


def diversity_loss(keypoints: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Penalty on keypoints closer than ``threshold`` to each other.

    ``D = min(‖k_i − k_j‖ + [i = j], threshold)``; loss ``= mean_b Σ_{i,j} (1 − D_ij/threshold) / (K(K−1))``.
    Clamped pairs get no gradient (the reference overwrites them).

    Args:
        keypoints: (B, K, 3) float, metres.
        threshold: distance beyond which pairs are not penalised, metres.

    Returns:
        () float in [0, 1].
    """
    num_keypoints = keypoints.shape[1]
    distances = _pairwise_distances(keypoints, keypoints)
    distances = distances + torch.eye(num_keypoints, dtype=distances.dtype, device=distances.device)
    distances = distances.masked_fill(distances >= threshold, threshold)
    penalty = (1 - distances / threshold).sum(dim=(1, 2))
    return (penalty / (num_keypoints * (num_keypoints - 1))).mean()


def chamfer_distance(points_1: torch.Tensor, points_2: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer ``mean_b [½ mean_i min_j ‖p1_i − p2_j‖ + ½ mean_j min_i ‖p1_i − p2_j‖]``.

    Args:
        points_1: (B, N1, 3) float, metres.
        points_2: (B, N2, 3) float, metres, same frame.

    Returns:
        () float, metres.
    """
    distances = _pairwise_distances(points_1, points_2)
    forward = distances.min(dim=2).values.mean(dim=1)
    backward = distances.min(dim=1).values.mean(dim=1)
    return (0.5 * forward + 0.5 * backward).mean()


def masked_chamfer_distance(points: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-object Chamfer between the masked observed points and the reconstruction, summed and divided by B.

    For object b with ``mask[b]`` selecting ``n_b > 0`` points:
    ``½ mean_{i∈mask} min_j ‖p_i − r_j‖ + ½ mean_j min_{i∈mask} ‖p_i − r_j‖``. Objects with ``n_b = 0`` add
    nothing but still count in the divisor B (reference ``ChamferDis_with_mask``, docs/model.md Q11; where every
    object is empty the reference fails, here the loss is 0).

    Args:
        points: (B, N, 3) float, metres.
        reconstruction: (B, M, 3) float, metres, same frame.
        mask: (B, N) bool, True for points that lie near the object model (``pc_mask``).

    Returns:
        () float, metres.
    """
    mask = mask.bool()
    counts = mask.sum(dim=1)
    has_points = counts > 0
    distances = _pairwise_distances(points, reconstruction)
    forward = torch.where(mask, distances.min(dim=2).values, 0.0).sum(dim=1) / counts.clamp(min=1)
    backward = distances.masked_fill(~mask.unsqueeze(2), float("inf")).min(dim=1).values
    backward = torch.where(has_points.unsqueeze(1), backward, 0.0).mean(dim=1)
    per_object = torch.where(has_points, 0.5 * forward + 0.5 * backward, 0.0)
    return per_object.sum() / points.shape[0]


def delta_loss(deltas: torch.Tensor) -> torch.Tensor:
    """``mean_{b,m} ‖deltas[b,m]‖``: keeps reconstructed points near their keypoint.

    Args:
        deltas: (B, M, 3) float, metres.

    Returns:
        () float, metres.
    """
    return torch.linalg.vector_norm(deltas, dim=2).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean_b ‖student_b − teacher_b‖₂``, neither side normalised (docs/model.md §11).

    Args:
        student: (B, F) float, projected student feature.
        teacher: (B, F) float, frozen teacher feature.

    Returns:
        () float.
    """
    return torch.linalg.vector_norm(student - teacher, dim=-1).mean()


_TERMS = ("pose", "nocs", "keypoint_coverage", "diversity", "reconstruction", "delta", "distillation")


class CleanPoseLoss(nn.Module):
    """Weighted sum of the CleanPose training losses.

    Args:
        pose_weight: weight of :func:`pose_loss` (reference ``loss.pose``).
        keypoint_coverage_weight: weight of :func:`keypoint_coverage_loss` (reference ``loss.cd``).
        nocs_weight: weight of :func:`nocs_loss` (reference ``loss.nocs``).
        diversity_weight: weight of :func:`diversity_loss` (reference ``loss.diversity``).
        reconstruction_weight: weight of the reconstruction Chamfer (reference ``loss.recon``).
        delta_weight: weight of :func:`delta_loss` (reference ``loss.delta``).
        distillation_weight: weight of :func:`distillation_loss` (reference ``loss.distillation``).
        diversity_threshold: :func:`diversity_loss` threshold, metres (reference ``loss.th``).
        nocs_threshold: smooth-L1 switch point of :func:`nocs_loss`.
        object_aware: True (NOCS): :func:`masked_chamfer_distance` with ``pc_mask``; False (HouseCat6D):
            :func:`chamfer_distance` over all points (reference ``loss.obj_aware``).
    """

    def __init__(
        self,
        pose_weight: float = 0.3,
        keypoint_coverage_weight: float = 2.0,
        nocs_weight: float = 2.0,
        diversity_weight: float = 10.0,
        reconstruction_weight: float = 15.0,
        delta_weight: float = 1.0,
        distillation_weight: float = 0.01,
        diversity_threshold: float = 0.01,
        nocs_threshold: float = 0.1,
        object_aware: bool = True,
    ):
        super().__init__()
        self.weights = {
            "pose": pose_weight,
            "nocs": nocs_weight,
            "keypoint_coverage": keypoint_coverage_weight,
            "diversity": diversity_weight,
            "reconstruction": reconstruction_weight,
            "delta": delta_weight,
            "distillation": distillation_weight,
        }
        self.diversity_threshold = diversity_threshold
        self.nocs_threshold = nocs_threshold
        self.object_aware = object_aware

    @classmethod
    def from_config(cls, config: Any) -> CleanPoseLoss:
        """Build from a loss config section whose fields have this constructor's argument names."""
        names = (
            "pose_weight", "keypoint_coverage_weight", "nocs_weight", "diversity_weight", "reconstruction_weight",
            "delta_weight", "distillation_weight", "diversity_threshold", "nocs_threshold", "object_aware",
        )  # fmt: skip
        return cls(**{name: getattr(config, name) for name in names if hasattr(config, name)})

    def forward(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Compute every term and the weighted total.

        Args:
            outputs: train-mode network outputs with the reference names: ``pred_rotation`` (B,3,3),
                ``pred_translation`` (B,3) m, ``pred_size`` (B,3) m, ``pred_kpt_3d`` (B,K,3) m,
                ``pred_kpt_nocs`` (B,K,3), ``recon_model`` (B,M,3) m, ``recon_delta`` (B,M,3) m, all in the
                camera frame; ``distillation_pointnet`` and ``distillation_ulip`` (B,F), needed only when the
                distillation weight is not 0.
            batch: ``pts`` (B,N,3) m (un-centred input points), ``rotation_label`` (B,3,3),
                ``translation_label`` (B,3) m, ``size_label`` (B,3) m, and ``pc_mask`` (B,N) bool when
                ``object_aware``.

        Returns:
            Unweighted terms ``pose``, ``nocs``, ``keypoint_coverage``, ``diversity``, ``reconstruction``,
            ``delta``, ``distillation`` (left out when its weight is 0 and its inputs are absent), and
            ``total = Σ weight·term``; each () float.

        Raises:
            DataFormatError: a required key is missing (the message lists them).
        """
        required_outputs = ["pred_rotation", "pred_translation", "pred_size", "pred_kpt_3d", "pred_kpt_nocs",
                            "recon_model", "recon_delta"]  # fmt: skip
        required_batch = ["pts", "rotation_label", "translation_label", "size_label"]
        if self.object_aware:
            required_batch.append("pc_mask")
        with_distillation = "distillation_pointnet" in outputs or self.weights["distillation"] != 0
        if with_distillation:
            required_outputs += ["distillation_pointnet", "distillation_ulip"]
        missing = [f"outputs[{k!r}]" for k in required_outputs if k not in outputs]
        missing += [f"batch[{k!r}]" for k in required_batch if k not in batch]
        if missing:
            raise DataFormatError(f"CleanPoseLoss: missing {', '.join(missing)}")

        keypoints = outputs["pred_kpt_3d"]
        rotation_gt, translation_gt, size_gt = batch["rotation_label"], batch["translation_label"], batch["size_label"]
        terms = {
            "pose": pose_loss(
                outputs["pred_rotation"],
                outputs["pred_translation"],
                outputs["pred_size"],
                rotation_gt,
                translation_gt,
                size_gt,
            ),  # fmt: skip
            "nocs": nocs_loss(
                outputs["pred_kpt_nocs"], keypoints, rotation_gt, translation_gt, size_gt, self.nocs_threshold
            ),  # fmt: skip
            "keypoint_coverage": keypoint_coverage_loss(keypoints, batch["pts"]),
            "diversity": diversity_loss(keypoints, self.diversity_threshold),
        }
        if self.object_aware:
            terms["reconstruction"] = masked_chamfer_distance(batch["pts"], outputs["recon_model"], batch["pc_mask"])
        else:
            terms["reconstruction"] = chamfer_distance(batch["pts"], outputs["recon_model"])
        terms["delta"] = delta_loss(outputs["recon_delta"])
        if with_distillation:
            terms["distillation"] = distillation_loss(outputs["distillation_pointnet"], outputs["distillation_ulip"])
        # Summed in the reference's order: pose, nocs, cd, diversity, recon, delta, distillation.
        total = None
        for name in _TERMS:
            if name in terms:
                weighted = self.weights[name] * terms[name]
                total = weighted if total is None else total + weighted
        terms["total"] = total
        return terms


def split_batch_loss(
    loss: CleanPoseLoss,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    first_size: int,
) -> dict[str, torch.Tensor]:
    """Loss of a batch made of two concatenated parts, as in NOCS training (synthetic first, then real).

    The network runs once on all B objects; the loss is computed on objects ``[:first_size]`` and
    ``[first_size:]`` separately and every term is combined as ``(L_1·b_1 + L_2·b_2) / (b_1 + b_2)``
    (reference ``solver.step_camera_real``; CAMERA 30 + REAL 10).

    Args:
        loss: the loss module.
        outputs: network outputs, see :meth:`CleanPoseLoss.forward`; tensors lead with the batch axis B.
        batch: batch inputs and labels, see :meth:`CleanPoseLoss.forward`.
        first_size: b_1, objects in the first part; 0 < b_1 < B.

    Returns:
        The same keys as :meth:`CleanPoseLoss.forward`, combined.
    """
    total_size = batch["pts"].shape[0]
    if not 0 < first_size < total_size:
        raise ValueError(f"first_size {first_size} must lie strictly between 0 and the batch size {total_size}")

    def part(mapping: Mapping[str, Any], selection: slice) -> dict[str, Any]:
        return {
            key: value[selection] if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == total_size
            else value
            for key, value in mapping.items()
        }  # fmt: skip

    first = loss(part(outputs, slice(0, first_size)), part(batch, slice(0, first_size)))
    second = loss(part(outputs, slice(first_size, None)), part(batch, slice(first_size, None)))
    second_size = total_size - first_size
    return {key: (first[key] * first_size + second[key] * second_size) / total_size for key in first}
