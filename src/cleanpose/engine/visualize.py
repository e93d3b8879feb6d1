"""Pictures of results: projected 3-D boxes and axes, prediction and ground truth side by side.

Reads the result pickles that `cleanpose test` writes (they carry ``image_path``, the frame relative
to the data root, besides the reference keys) and the frames' colour images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from cleanpose.data.formats import housecat6d, nocs
from cleanpose.data.formats.encoding import read_color
from cleanpose.errors import DataFormatError
from cleanpose.fileio import ensure_writable_folder
from cleanpose.geometry import box_corners, decompose_similarity, project_points
from cleanpose.metrics import load_results

logger = logging.getLogger(__name__)

# Edges of the box whose corners `geometry.box_corners` orders (+,+,+) (+,+,−) (−,+,+) (−,+,−) (+,−,+) …
BOX_EDGES = ((0, 1), (0, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 7), (6, 7), (0, 4), (1, 5), (2, 6), (3, 7))
AXIS_COLORS_BGR = ((0, 0, 255), (0, 255, 0), (255, 0, 0))  # x red, y green, z blue


def frame_image_and_intrinsics(data_root: str | Path, image_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Colour image (H, W, 3) uint8 RGB and K (3, 3) of a frame named as in result ``image_path``.

    NOCS: ``real/test/scene_1/0000`` (split intrinsics); HouseCat6D: ``test_scene1/000000`` (scene file).
    """
    root = Path(data_root)
    first = Path(image_path).parts[0]
    if first in nocs.SOURCES:
        return read_color(nocs.frame_path(root, image_path, "_color.png")), nocs.intrinsics_for(first)
    scene, name = Path(image_path).parts[-2:]
    frame = housecat6d.HouseCatFrame(root / scene, name)
    return read_color(frame.color_path), housecat6d.read_intrinsics(frame.intrinsics_path)


def draw_poses(image_bgr: np.ndarray, poses: np.ndarray, extents: np.ndarray, intrinsics: np.ndarray, color) -> None:
    """Draw each object's box edges and its x/y/z axes (half the box size long) in place.

    Args:
        image_bgr: (H, W, 3) uint8, BGR.
        poses: (n, 4, 4) camera-from-object similarity ``[[s·R, t], [0, 1]]``, metres.
        extents: (n, 3) normalized box extents (metric size = s · extents).
        intrinsics: (3, 3).
        color: BGR box colour.
    """
    for pose, extent in zip(poses, extents):
        similarity = decompose_similarity(pose)
        corners = box_corners(extent) @ (similarity.scale * similarity.rotation).T + similarity.translation
        if np.any(corners[:, 2] <= 0):
            continue
        pixels = np.round(project_points(corners, intrinsics)).astype(int)
        for a, b in BOX_EDGES:
            cv2.line(image_bgr, tuple(pixels[a]), tuple(pixels[b]), color, 2, cv2.LINE_AA)
        axes = (
            np.vstack([np.zeros(3), np.diag(extent / 2)]) @ (similarity.scale * similarity.rotation).T
            + similarity.translation
        )
        ends = np.round(project_points(axes, intrinsics)).astype(int)
        for axis, axis_color in enumerate(AXIS_COLORS_BGR):
            cv2.line(image_bgr, tuple(ends[0]), tuple(ends[axis + 1]), axis_color, 2, cv2.LINE_AA)


def visualize_results(
    results_dir: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    dataset: str = "nocs",
    limit: int | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<image path with _ for />.png``: prediction (left, green), ground truth (right, yellow).

    Raises:
        DataFormatError: a result without ``image_path`` (not written by ``cleanpose test``), or missing frames.
    """
    out_dir = ensure_writable_folder(out_dir)
    loaded = load_results(results_dir, dataset)
    written = []
    for result, origin in list(zip(loaded.results, loaded.origins))[:limit]:
        if "image_path" not in result:
            raise DataFormatError(f"{origin}: no 'image_path' key; visualize needs results written by 'cleanpose test'")
        rgb, intrinsics = frame_image_and_intrinsics(data_root, str(result["image_path"]))
        prediction = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        ground_truth = prediction.copy()
        draw_poses(
            prediction, np.asarray(result["pred_RTs"]), np.asarray(result["pred_scales"]), intrinsics, (0, 255, 0)
        )
        draw_poses(
            ground_truth, np.asarray(result["gt_RTs"]), np.asarray(result["gt_scales"]), intrinsics, (0, 255, 255)
        )
        for panel, title in ((prediction, "prediction"), (ground_truth, "ground truth")):
            cv2.putText(panel, title, (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        target = out_dir / (str(result["image_path"]).replace("/", "_") + ".png")
        cv2.imwrite(str(target), np.hstack([prediction, ground_truth]))
        written.append(target)
    logger.info("wrote %d pictures to %s", len(written), out_dir)
    return written
