"""Files of ``cleanpose predict``: frames in, ``poses.json`` and overlay pictures out.

Inputs: a colour PNG, a depth PNG (uint16, 1/``depth_scale`` metre per unit; the NOCS CAMERA 3-channel
encoding too), intrinsics (`read_intrinsics`), and the objects as an instance-id mask PNG with
categories (names, a ``{id: name}`` JSON file or a NOCS ``_meta.txt``) or as the reference's
segmentation-result pickle of the frame (its masks, boxes, scores and 1-based class ids).

``poses.json`` (`POSES_FORMAT`, version `POSES_VERSION`)::

    {"format": "cleanpose.poses", "version": 1,
     "frame": {"name", "rgb", "depth", "masks" (paths as given), "width", "height", "intrinsics" (3x3)},
     "checkpoint": path, "conventions": {...: the text of CONVENTIONS},
     "objects": [{"instance": mask id or position, "category": name, "score": float,
                  "status": "ok" | "skipped", "reason": null | "empty_mask" | "few_points", "detail": text,
                  "num_points": usable depth pixels in the crop window,
                  "rotation": 3x3 rows | null, "translation": [x, y, z] m | null, "size": [sx, sy, sz] m | null,
                  "corners": 8 x [x, y, z] m | null}, ...]}

A folder run (`predict_folder`) writes ``<frame>.json`` (the document above) and ``<frame>_overlay.png``
per frame, and ``summary.json`` (`SUMMARY_FORMAT`): frames, object counts per status, category and
skip reason, and the time spent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cleanpose.data.formats import nocs
from cleanpose.data.formats.encoding import read_color, read_depth, read_mask, read_meta
from cleanpose.data.formats.segmentation import read_segmentation_result
from cleanpose.engine.predict import Frame, ObjectPose, Predictor
from cleanpose.engine.visualize import draw_poses
from cleanpose.errors import ConfigError, DataFormatError
from cleanpose.fileio import atomic_write_bytes, ensure_writable_folder
from cleanpose.geometry import project_points

logger = logging.getLogger(__name__)

POSES_FORMAT = "cleanpose.poses"
POSES_VERSION = 1
SUMMARY_FORMAT = "cleanpose.predict-summary"

CONVENTIONS = {
    "frame": "camera frame of OpenCV: x right, y down, z forward; metres",
    "rotation": "object-to-camera rotation R, 3x3, row-major",
    "translation": "box centre t in the camera frame, metres",
    "size": "box side lengths along the object's x, y, z axes, metres",
    "corners": "R (±sx/2, ±sy/2, ±sz/2) + t, signs (+,+,+) (+,+,-) (-,+,+) (-,+,-) (+,-,+) (+,-,-) (-,-,+) (-,-,-)",
    "num_points": "usable depth pixels (mask and depth > 0) inside the object's crop window",
}
"""The meaning of every pose field, copied into each ``poses.json``."""

INTRINSICS_PRESETS = {"nocs-real": nocs.REAL_INTRINSICS, "nocs-camera": nocs.CAMERA_INTRINSICS}
"""Named intrinsics accepted by `read_intrinsics`."""


@dataclass
class FrameFiles:
    """The files of one frame; ``labels`` is a JSON / meta file or None (then ``categories`` applies)."""

    name: str
    rgb: Path
    depth: Path
    masks: Path
    labels: Path | None = None


def read_intrinsics(text: str) -> np.ndarray:
    """(3, 3) K from ``fx,fy,cx,cy``, a preset name (`INTRINSICS_PRESETS`), a JSON file (``{"fx", "fy",
    "cx", "cy"}``, ``{"K": 3x3}`` or a 3x3 list) or a text file of 4 (fx fy cx cy) or 9 (K) numbers.

    Raises:
        DataFormatError: a file that cannot be read or parsed, or the wrong count of numbers.
    """
    if text in INTRINSICS_PRESETS:
        return INTRINSICS_PRESETS[text].copy()
    path = Path(text)
    if path.suffix.lower() in (".json", ".txt") or path.exists():
        try:
            content = path.read_text(encoding="utf-8")
        except OSError as error:
            raise DataFormatError(f"{path}: cannot read intrinsics file ({error.strerror or error})") from None
        values = _intrinsics_values(content, path)
    else:
        try:
            values = [float(value) for value in text.split(",")]
        except ValueError:
            raise DataFormatError(f"--intrinsics {text!r}: expected fx,fy,cx,cy, a preset or a file") from None
    if len(values) == 4:
        fx, fy, cx, cy = values
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if len(values) == 9:
        return np.asarray(values, dtype=np.float64).reshape(3, 3)
    raise DataFormatError(f"intrinsics {text!r}: {len(values)} numbers; expected 4 (fx, fy, cx, cy) or 9 (K)")


def _intrinsics_values(content: str, path: Path) -> list[float]:
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(content)
            if isinstance(data, dict) and "K" in data:
                data = data["K"]
            if isinstance(data, dict):
                return [float(data[key]) for key in ("fx", "fy", "cx", "cy")]
            return [float(value) for value in np.asarray(data, dtype=np.float64).ravel()]
        return [float(value) for value in content.split()]
    except (ValueError, KeyError, TypeError) as error:
        raise DataFormatError(f"{path}: cannot parse intrinsics ({error})") from None


def read_labels(path: str | os.PathLike) -> dict[int, str]:
    """``{mask id: category name}`` from a JSON object or a NOCS ``_meta.txt`` (class ids 1-6, 0 skipped).

    Raises:
        DataFormatError: unreadable file, or ids that are not integers.
    """
    path = Path(path)
    if path.suffix.lower() == ".txt":
        return {row.instance_id: nocs.CATEGORY_NAMES[row.class_id - 1] for row in read_meta(path) if row.class_id}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(key): str(value) for key, value in data.items()}
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read labels file ({error.strerror or error})") from None
    except (ValueError, AttributeError) as error:
        raise DataFormatError(f"{path}: expected a JSON object {{mask id: category name}} ({error})") from None


def load_frame(
    files: FrameFiles, predictor: Predictor, intrinsics: np.ndarray, *, categories=None, depth_scale: float = 1000.0
) -> Frame:
    """Read the files of a frame into a `Frame` (masks from a PNG id image or a segmentation pickle).

    Raises:
        DataFormatError: unreadable or corrupt files (named).
        ConfigError: no categories for a mask image.
    """
    rgb, depth = read_color(files.rgb), read_depth(files.depth)
    if files.masks.suffix.lower() == ".pkl":
        result = read_segmentation_result(files.masks)
        masks = [result.pred_masks[:, :, j] for j in range(len(result))]
        names = [predictor.categories[int(class_id) - 1] for class_id in result.pred_class_ids]
        return Frame(
            rgb, depth, intrinsics, masks, names, depth_scale, result.pred_bboxes, result.pred_scores, name=files.name
        )
    masks = read_mask(files.masks)
    if files.labels is not None:
        categories = read_labels(files.labels)
    if categories is None:
        raise ConfigError(f"{files.masks}: give the objects' categories (--categories or --labels)")
    labels = (
        {key: value for key, value in categories.items() if np.any(masks == key)}
        if isinstance(categories, dict)
        else categories
    )
    return Frame(rgb, depth, intrinsics, masks, labels, depth_scale, name=files.name)


def poses_document(objects: list[ObjectPose], files: FrameFiles, frame: Frame, checkpoint: str) -> dict:
    """The ``poses.json`` document of one frame (see the module docstring)."""
    height, width = frame.rgb.shape[:2]
    return {
        "format": POSES_FORMAT,
        "version": POSES_VERSION,
        "frame": {
            "name": files.name,
            "rgb": str(files.rgb),
            "depth": str(files.depth),
            "masks": str(files.masks),
            "width": int(width),
            "height": int(height),
            "intrinsics": np.asarray(frame.intrinsics).tolist(),
        },
        "checkpoint": checkpoint,
        "conventions": CONVENTIONS,
        "objects": [_object_record(pose) for pose in objects],
    }


def _object_record(pose: ObjectPose) -> dict:
    def listed(array):
        return None if array is None else np.asarray(array, dtype=np.float64).tolist()

    return {
        "instance": int(pose.instance), "category": pose.category, "score": float(pose.score),
        "status": "ok" if pose.ok else "skipped", "reason": pose.reason, "detail": pose.detail,
        "num_points": int(pose.num_points), "rotation": listed(pose.rotation), "translation": listed(pose.translation),
        "size": listed(pose.size), "corners": listed(pose.corners),
    }  # fmt: skip


def draw_overlay(rgb: np.ndarray, objects: list[ObjectPose], intrinsics: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR: the colour image with each posed object's box, axes and a ``category score`` label."""
    image = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    for pose in objects:
        if not pose.ok:
            continue
        scale = float(np.linalg.norm(pose.size))
        similarity = np.eye(4)
        similarity[:3, :3], similarity[:3, 3] = pose.rotation * scale, pose.translation
        draw_poses(image, similarity[None], (pose.size / scale)[None], intrinsics, (0, 255, 0))
        if np.all(pose.corners[:, 2] > 0):
            pixels = project_points(pose.corners, intrinsics)
            anchor = (int(round(pixels[:, 0].min())), max(12, int(round(pixels[:, 1].min())) - 4))
            cv2.putText(
                image,
                f"{pose.category} {pose.score:.2f}",
                anchor,
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
    return image


def write_frame_outputs(document: dict, overlay: np.ndarray, json_path: Path, png_path: Path) -> None:
    """Write a frame's JSON document and overlay PNG (atomically)."""
    atomic_write_bytes(json_path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    ok, buffer = cv2.imencode(".png", overlay)
    if not ok:
        raise DataFormatError(f"{png_path}: OpenCV could not encode the overlay")
    atomic_write_bytes(png_path, buffer.tobytes())


def find_frames(folder: str | os.PathLike) -> list[FrameFiles]:
    """Frames of a folder: ``rgb/ depth/ masks/`` subfolders (same file names; optional ``labels/<name>.json``),
    else NOCS naming (``*_color.png`` with ``_depth.png``, ``_mask.png``, optional ``_meta.txt``), sorted.
    Mask files are checked when read (they may come from `use_segmentation_results` instead).

    Raises:
        DataFormatError: no frame found, or a frame misses its depth file.
    """
    folder = Path(folder)
    frames = []
    if (folder / "rgb").is_dir():
        for rgb in sorted((folder / "rgb").glob("*.png")):
            labels = folder / "labels" / f"{rgb.stem}.json"
            frames.append(
                FrameFiles(
                    rgb.stem,
                    rgb,
                    folder / "depth" / rgb.name,
                    folder / "masks" / rgb.name,
                    labels if labels.exists() else None,
                )
            )
    else:
        for rgb in sorted(folder.rglob("*_color.png")):
            prefix = str(rgb)[: -len("_color.png")]
            meta = Path(f"{prefix}_meta.txt")
            name = str(Path(prefix).relative_to(folder)).replace(os.sep, "_")
            frames.append(
                FrameFiles(
                    name, rgb, Path(f"{prefix}_depth.png"), Path(f"{prefix}_mask.png"), meta if meta.exists() else None
                )
            )
    if not frames:
        raise DataFormatError(f"{folder}: no frames (neither rgb/ depth/ masks/ subfolders nor *_color.png files)")
    for files in frames:
        for path in (files.depth,):
            if not path.is_file():
                raise DataFormatError(f"{path}: file of frame {files.name} not found")
    return frames


def use_segmentation_results(frames: list[FrameFiles], folder: str | os.PathLike) -> None:
    """Take each frame's masks from its segmentation-result pickle in `folder` (in place).

    The pickle of frame ``<name>`` is the one ``results_*.pkl`` whose name ends in ``_<name>.pkl`` (the
    reference names: ``results_test_scene_1_0000.pkl`` for ``scene_1/0000``).

    Raises:
        DataFormatError: a frame with no pickle, or with several.
    """
    pickles = sorted(Path(folder).glob("results_*.pkl"))
    for files in frames:
        matches = [path for path in pickles if path.name.endswith(f"_{files.name}.pkl")]
        if len(matches) != 1:
            found = ", ".join(path.name for path in matches) or "none"
            raise DataFormatError(f"{folder}: frame {files.name} needs one results_*_{files.name}.pkl; found {found}")
        files.masks = matches[0]


def predict_files(
    predictor: Predictor,
    frames: list[FrameFiles],
    intrinsics: np.ndarray,
    out_dir,
    *,
    checkpoint: str,
    categories=None,
    depth_scale: float = 1000.0,
    single: bool = False,
    quiet: bool = False,
) -> dict:
    """Predict frames one by one, writing their JSON and overlay; returns (and writes) the summary.

    ``single`` names the outputs ``poses.json`` / ``overlay.png`` (one frame); otherwise
    ``<frame>.json`` / ``<frame>_overlay.png`` plus ``summary.json``.
    """
    from tqdm import tqdm

    out_dir = ensure_writable_folder(out_dir)
    start = time.perf_counter()
    statuses, per_category, reasons, listing = Counter(), Counter(), Counter(), []
    for files in tqdm(frames, desc="predict", unit="frame", disable=quiet or single):
        frame = load_frame(files, predictor, intrinsics, categories=categories, depth_scale=depth_scale)
        objects = predictor.predict_frames([frame])[0]
        document = poses_document(objects, files, frame, checkpoint)
        stem = "poses" if single else files.name
        json_path = out_dir / f"{stem}.json"
        overlay_path = out_dir / ("overlay.png" if single else f"{files.name}_overlay.png")
        write_frame_outputs(document, draw_overlay(frame.rgb, objects, frame.intrinsics), json_path, overlay_path)
        for pose in objects:
            statuses["ok" if pose.ok else "skipped"] += 1
            per_category[pose.category] += 1
            if not pose.ok:
                reasons[pose.reason] += 1
        listing.append(
            {
                "name": files.name,
                "json": json_path.name,
                "overlay": overlay_path.name,
                "objects": len(objects),
                "posed": sum(pose.ok for pose in objects),
            }
        )
    summary = {
        "format": SUMMARY_FORMAT, "version": POSES_VERSION, "checkpoint": checkpoint, "frames": listing,
        "objects": dict(statuses), "categories": dict(per_category), "skipped": dict(reasons),
        "seconds": round(time.perf_counter() - start, 3),
    }  # fmt: skip
    if not single:
        atomic_write_bytes(out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    logger.info(
        "%d frames, %d objects posed, %d skipped %s -> %s",
        len(frames),
        statuses["ok"],
        statuses["skipped"],
        dict(reasons),
        out_dir,
    )
    return summary
