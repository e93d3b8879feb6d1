"""Object point models ``obj_models/<split>.pkl`` and ``mug_meta.pkl`` from the raw meshes, as SPD's
``preprocess/shape_data.py`` makes them (`docs/data_formats.md` §2.7).

Per model: 3 × 1024 points sampled uniformly by triangle area, then Euclidean farthest-point
sampling to 1024 from point 0. CAMERA points are z-flipped into the NOCS frame; REAL points are
divided by the metric box diagonal of ``<name>.txt``. Mugs are re-centred (`mug_fix`) and their
``[shift, scale]`` recorded. The CAMERA mug ``b9be7cfe653740eb7633a2dd89cec754`` is left out.

Each draw comes from the `numpy.random.RandomState` passed in, in the reference's order (per point:
face, then the two barycentric numbers), so a RandomState seeded like NumPy's global state gives
the reference's points bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cleanpose.data.prepare.annotate import IMPROPER_MUG
from cleanpose.errors import DataFormatError

CAMERA_SYNSETS = ("02876657", "02880940", "02942699", "02946921", "03642806", "03797390")
"""ShapeNet synsets of the six NOCS categories, class-id order."""

MUG_SYNSET = "03797390"

MUG_SHIFTS = {
    "3a7439cfaa9af51faf1af397e14a566d": (0.115, 0.0, 0.0),
    "5b0c679eb8a2156c4314179664d18101": (0.083, 0.0, -0.044),
    "649a51c711dc7f3b32e150233fdd42e9": (0.0, 0.0, -0.017),
    "bf2b5e941b43d030138af902bc222a59": (0.0534, 0.0, 0.0),
    "ca198dc3f7dc0cacec6338171298c66b": (0.120, 0.0, 0.0),
    "f42a9784d165ad2f5e723252788c3d6e": (0.117, 0.0, -0.026),
}
"""SPD's hand-set shifts of six CAMERA mugs (normalized units); other mugs get the formula of `mug_fix`."""

MODEL_POINTS = 1024
OVERSAMPLING = 3


def read_obj(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of a Wavefront OBJ (``v`` and ``f`` lines; polygons fan-triangulated).

    Only the vertex index of each ``a/b/c`` face group is used (1-based; negative = relative).

    Returns:
        (vertices (V, 3) float64, faces (F, 3) int64 0-based).

    Raises:
        DataFormatError: unreadable file, a malformed line, an index out of range, or no triangle.
    """
    vertices, faces = [], []
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for number, line in enumerate(stream, start=1):
                if line.startswith("v "):
                    fields = line.split()
                    try:
                        vertices.append([float(value) for value in fields[1:4]])
                    except ValueError:
                        raise DataFormatError(f"{path}:{number}: bad vertex line {line.strip()!r}") from None
                elif line.startswith("f"):
                    try:
                        polygon = [int(group.split("/")[0]) for group in line.split()[1:]]
                    except ValueError:
                        raise DataFormatError(f"{path}:{number}: bad face line {line.strip()!r}") from None
                    polygon = [index - 1 if index > 0 else len(vertices) + index for index in polygon]
                    faces.extend([polygon[0], polygon[k], polygon[k + 1]] for k in range(1, len(polygon) - 1))
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read mesh ({error.strerror or error})") from None
    vertex_array = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    face_array = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(face_array) == 0:
        raise DataFormatError(f"{path}: mesh has no triangle")
    if face_array.min() < 0 or face_array.max() >= len(vertex_array):
        raise DataFormatError(f"{path}: face index out of range (mesh has {len(vertex_array)} vertices)")
    return vertex_array, face_array


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, generator: np.random.RandomState) -> np.ndarray:
    """Points uniformly distributed over the surface by area (SPD's sampler).

    Per point three uniforms u0, u1, u2 in draw order: the face is the first whose cumulative area
    exceeds ``u0 · total``; the point is ``(1 − √u1)·a + √u1·(1 − u2)·b + √u1·u2·c``.

    Args:
        vertices: (V, 3) float64.
        faces: (F, 3) int indices.
        count: number of points.
        generator: source of the uniforms.

    Returns:
        (count, 3) float64.
    """
    triangles = vertices[faces]
    cross = np.cross(triangles[:, 1, :] - triangles[:, 0, :], triangles[:, 2, :] - triangles[:, 0, :])
    cumulative = np.cumsum(0.5 * np.linalg.norm(cross, axis=1))
    uniforms = generator.random_sample((count, 3))
    picked = triangles[np.searchsorted(cumulative, uniforms[:, 0] * cumulative[-1])]
    root = np.sqrt(uniforms[:, 1])
    return (
        (1 - root)[:, None] * picked[:, 0, :]
        + (root * (1 - uniforms[:, 2]))[:, None] * picked[:, 1, :]
        + (root * uniforms[:, 2])[:, None] * picked[:, 2, :]
    )


def farthest_point_indices(points: np.ndarray, count: int) -> np.ndarray:
    """Euclidean farthest point sampling from index 0 (ties: lowest index).

    Args:
        points: (N, 3) float.
        count: number of picks M ≤ N.

    Returns:
        (M,) int64 indices; the first is 0.
    """
    picks = np.zeros(count, dtype=np.int64)
    xs, ys, zs = (np.ascontiguousarray(points[:, axis], dtype=np.float64) for axis in range(3))
    distance = np.full(len(points), np.inf)
    current = 0
    for step in range(count):
        picks[step] = current
        np.minimum(
            distance, np.sqrt((xs - xs[current]) ** 2 + (ys - ys[current]) ** 2 + (zs - zs[current]) ** 2), out=distance
        )
        current = int(np.argmax(distance))
    return picks


def mesh_points(path: str | os.PathLike, generator: np.random.RandomState) -> np.ndarray:
    """(1024, 3) float64 points of a mesh file in its own frame: area sampling × 3, then FPS."""
    vertices, faces = read_obj(path)
    points = sample_surface(vertices, faces, OVERSAMPLING * MODEL_POINTS, generator)
    return points[farthest_point_indices(points, MODEL_POINTS)]


def mug_fix(points: np.ndarray, shift=None) -> tuple[np.ndarray, np.ndarray, float]:
    """SPD's mug re-centring: add `shift` (default: along x by ``(min z − max z)/2 − min x``), rescale
    so that the box ``2·max|p|`` has unit diagonal.

    Returns:
        (points (N, 3) float64, shift (3,) float64, scale float) with ``points = (p + shift)·scale``.
    """
    if shift is None:
        shift = np.array([(np.amin(points[:, 2]) - np.amax(points[:, 2])) / 2 - np.amin(points[:, 0]), 0.0, 0.0])
    shift = np.asarray(shift, dtype=np.float64)
    shifted = points + shift
    scale = 1 / np.linalg.norm(2 * np.amax(np.abs(shifted), axis=0))
    return shifted * scale, shift, float(scale)


def camera_model_paths(models_dir: str | os.PathLike, subset: str) -> dict[str, Path]:
    """CAMERA model id → ``model.obj`` under ``obj_models/<subset>/<synset>/<id>/`` for the six
    category synsets (distractor synsets and the improper mug left out), sorted."""
    paths = {}
    for synset in CAMERA_SYNSETS:
        folder = Path(models_dir, subset, synset)
        for instance in sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else ():
            if instance != IMPROPER_MUG:
                paths[instance] = folder / instance / "model.obj"
    return paths


def real_model_paths(models_dir: str | os.PathLike, subset: str) -> dict[str, Path]:
    """REAL model name → ``obj_models/real_<subset>/<name>.obj``, sorted by name."""
    return {path.name.split(".")[0]: path for path in sorted(Path(models_dir, f"real_{subset}").glob("*.obj"))}


def camera_model(path: str | os.PathLike, generator: np.random.RandomState) -> tuple[np.ndarray, list | None]:
    """SPD point model of one CAMERA mesh: (1024, 3) float64 and, for mugs, ``[shift, scale]``."""
    path = Path(path)
    points = mesh_points(path, generator) * np.array([[1.0, 1.0, -1.0]])
    if path.parent.parent.name != MUG_SYNSET:
        return points, None
    points, shift, scale = mug_fix(points, MUG_SHIFTS.get(path.parent.name))
    return points, [shift, scale]


def real_model(path: str | os.PathLike, generator: np.random.RandomState) -> tuple[np.ndarray, list | None]:
    """SPD point model of one REAL mesh (divided by the diagonal of ``<name>.txt``), mugs re-centred.

    Raises:
        DataFormatError: the size file is missing or not 3 numbers.
    """
    path = Path(path)
    size_file = path.with_suffix(".txt")
    try:
        dims = np.loadtxt(size_file, ndmin=1)
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{size_file}: cannot read the model's size file ({error})") from None
    if dims.shape != (3,):
        raise DataFormatError(f"{size_file}: size file holds shape {dims.shape}; expected 3 extents in metres")
    points = mesh_points(path, generator) / np.linalg.norm(dims)
    if "mug" not in path.name.split(".")[0]:
        return points, None
    points, shift, scale = mug_fix(points)
    return points, [shift, scale]
