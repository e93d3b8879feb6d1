"""Ray-cast rendering of a camera-frame triangle soup with Embree (through trimesh).

One ray per pixel leaves the camera centre through the pixel centre ``(u, v)`` (u = column, v = row)
with direction ``((u − cx)/fx, (v − cy)/fy, 1)``, so the hit point ``p`` satisfies
``p = z · ((u − cx)/fx, (v − cy)/fy, 1)`` exactly: back-projecting the pixel with its depth ``z``
gives the hit point back. Embree only finds which triangle each ray hits first; the hit point is
then recomputed in float64 as the intersection of the ray with that triangle's plane.

Frames: OpenCV camera (x right, y down, z forward); lengths in metres.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import trimesh

from cleanpose.errors import BackendUnavailableError

logger = logging.getLogger(__name__)


class RayHits(NamedTuple):
    """Per-pixel first hits of one rendered image (H rows, W columns)."""

    face: np.ndarray
    """(H, W) int64, index of the hit triangle in the rendered mesh, −1 where the ray hit nothing."""
    points: np.ndarray
    """(H, W, 3) float64, hit point in the camera frame (metres); 0 where nothing was hit."""
    cos_incidence: np.ndarray
    """(H, W) float64, |cos| of the angle between the ray and the hit face normal; 0 where no hit."""
    normals: np.ndarray
    """(H, W, 3) float64, unit face normal at the hit, flipped to face the camera; 0 where no hit."""
    barycentric: np.ndarray
    """(H, W, 3) float64, barycentric coordinates of the hit point in the hit triangle (weights of its
    corners ``faces[face]``, in [0, 1], summing to 1); 0 where no hit."""


def barycentric_coordinates(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of points in the planes of their triangles.

    Args:
        points: (M, 3) float, each in the plane of its triangle.
        corners: (M, 3, 3) float, triangle corners ``[a, b, c]``.

    Returns:
        (M, 3) float64 weights of (a, b, c), clipped to [0, 1] and renormalized to sum 1 (a hit found
        by Embree may lie a rounding error outside its triangle).
    """
    edge_b, edge_c = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    offset = points - corners[:, 0]
    bb, bc, cc = (np.einsum("ij,ij->i", *pair) for pair in ((edge_b, edge_b), (edge_b, edge_c), (edge_c, edge_c)))
    ob, oc = np.einsum("ij,ij->i", offset, edge_b), np.einsum("ij,ij->i", offset, edge_c)
    denominator = np.maximum(bb * cc - bc * bc, 1e-300)
    weight_b = (cc * ob - bc * oc) / denominator
    weight_c = (bb * oc - bc * ob) / denominator
    weights = np.clip(np.stack([1.0 - weight_b - weight_c, weight_b, weight_c], axis=1), 0.0, 1.0)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)


def _intersector(mesh: trimesh.Trimesh):
    try:
        from trimesh.ray import ray_pyembree
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise BackendUnavailableError(
            "the synthetic renderer needs Embree ray casting: install 'embreex' (pip install embreex)"
        ) from error
    return ray_pyembree.RayMeshIntersector(mesh, scale_to_box=False)


def pixel_rays(intrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
    """Ray directions through every pixel centre, with unit z component.

    Args:
        intrinsics: (3, 3) float, pixels, OpenCV convention.
        width: image columns W.
        height: image rows H.

    Returns:
        (H, W, 3) float64; ``[v, u] = ((u − cx)/fx, (v − cy)/fy, 1)``.
    """
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    columns = (np.arange(width, dtype=np.float64) - intrinsics[0, 2]) / intrinsics[0, 0]
    rows = (np.arange(height, dtype=np.float64) - intrinsics[1, 2]) / intrinsics[1, 1]
    rays = np.empty((height, width, 3))
    rays[:, :, 0] = columns[None, :]
    rays[:, :, 1] = rows[:, None]
    rays[:, :, 2] = 1.0
    return rays


def projected_region(vertices: np.ndarray, intrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) bool: pixels inside the 2-D bounding box of the projected vertices (1-pixel margin).

    The whole image when a vertex lies at or behind the camera plane (z <= 1 mm).
    """
    region = np.zeros((height, width), dtype=bool)
    vertices = np.asarray(vertices, dtype=np.float64)
    if len(vertices) == 0:
        return region
    if vertices[:, 2].min() <= 1e-3:
        region[:] = True
        return region
    u = vertices[:, 0] / vertices[:, 2] * intrinsics[0, 0] + intrinsics[0, 2]
    v = vertices[:, 1] / vertices[:, 2] * intrinsics[1, 1] + intrinsics[1, 2]
    left, right = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, width)
    top, bottom = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, height)
    if left < right and top < bottom:
        region[top:bottom, left:right] = True
    return region


class MeshCaster:
    """Embree ray queries against one triangle mesh in the camera frame (built once, queried often).

    By default the Embree structure is built from `vertices` themselves. With `search`, the caster
    builds none and asks ``search`` (a `MeshCaster` of the *same faces* in another frame, e.g. the
    world frame of a scene whose objects stay put while the camera moves) which triangle each ray
    hits, after moving the rays into that frame with ``to_search``; everything else (hit points,
    normals, barycentric coordinates) is still computed in float64 from `vertices`. Embree works in
    float32, so the triangle found for a ray grazing an edge may differ from the one a structure
    built in the camera frame would report (then a neighbouring triangle of the same surface).
    """

    def __init__(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        search: MeshCaster | None = None,
        to_search: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        """
        Args:
            vertices: (V, 3) float, camera frame, metres.
            faces: (F, 3) int, vertex indices.
            search: optional caster of the same faces (same order) in another frame, queried instead of
                building a structure here.
            to_search: with `search`, ``(rotation (3, 3), translation (3,))`` mapping this frame into the
                search frame: ``x_search = rotation @ x + translation``.
        """
        self.mesh = trimesh.Trimesh(
            np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), process=False
        )
        if search is not None and len(search.mesh.faces) != len(self.mesh.faces):
            raise ValueError("a search caster must hold the same faces as the mesh it searches for")
        self._to_search = to_search if search is not None else None
        if search is None:
            self._intersector = _intersector(self.mesh) if len(self.mesh.faces) else None
        else:
            self._intersector = search._intersector

    def _first_faces(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """(M,) int64 index of the first triangle hit by each ray (−1: none); rays in this caster's frame."""
        if self._to_search is not None:
            rotation, translation = self._to_search
            origins, directions = origins @ rotation.T + translation, directions @ rotation.T
        return np.asarray(self._intersector.intersects_first(origins, directions), dtype=np.int64)

    def first_hits(self, intrinsics: np.ndarray, width: int, height: int, region: np.ndarray | None = None) -> RayHits:
        """First hits of the pixel rays (see `cast_rays`)."""
        all_rays = pixel_rays(intrinsics, width, height).reshape(-1, 3)
        selected = np.arange(len(all_rays)) if region is None else np.flatnonzero(np.asarray(region).ravel())
        face = np.full(len(all_rays), -1, dtype=np.int64)
        points = np.zeros_like(all_rays)
        cos_incidence = np.zeros(len(all_rays))
        normals = np.zeros_like(all_rays)
        barycentric = np.zeros_like(all_rays)
        if len(selected) and self._intersector is not None:
            rays = all_rays[selected]
            found = self._first_faces(np.zeros_like(rays), rays)
            face[selected] = found
            hit = found >= 0
            corners = self.mesh.vertices[self.mesh.faces[found[hit]]]  # (M, 3, 3)
            normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
            normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-300)
            direction = rays[hit]
            along = np.einsum("ij,ij->i", normal, direction)
            # ray o + λ d with o = 0 meets the plane n·(x − a) = 0 at λ = n·a / n·d; z of the hit is λ (d_z = 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                depth = np.einsum("ij,ij->i", normal, corners[:, 0]) / along
            target = selected[hit]
            points[target] = direction * depth[:, None]
            cos_incidence[target] = np.abs(along) / np.sqrt(np.einsum("ij,ij->i", direction, direction))
            normals[target] = normal * -np.sign(along)[:, None]
            barycentric[target] = barycentric_coordinates(points[target], corners)
        return RayHits(
            face.reshape(height, width),
            points.reshape(height, width, 3),
            cos_incidence.reshape(height, width),
            normals.reshape(height, width, 3),
            barycentric.reshape(height, width, 3),
        )

    def blocked(self, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Whether rays from `origins` along one `direction` hit the mesh (shadow rays).

        Args:
            origins: (M, 3) float, camera frame, metres.
            direction: (3,) float, camera frame.

        Returns:
            (M,) bool.
        """
        origins = np.asarray(origins, dtype=np.float64)
        if self._intersector is None or len(origins) == 0:
            return np.zeros(len(origins), dtype=bool)
        directions = np.broadcast_to(np.asarray(direction, dtype=np.float64), origins.shape)
        return self._first_faces(origins, directions) >= 0


def cast_rays(
    vertices: np.ndarray,
    faces: np.ndarray,
    intrinsics: np.ndarray,
    width: int,
    height: int,
    region: np.ndarray | None = None,
) -> RayHits:
    """Render first hits of a triangle mesh seen from the camera at the origin.

    Args:
        vertices: (V, 3) float, camera frame, metres.
        faces: (F, 3) int, vertex indices.
        intrinsics: (3, 3) float, pixels, OpenCV convention.
        width: image columns W.
        height: image rows H.
        region: optional (H, W) bool; rays are cast only there (elsewhere: no hit).

    Returns:
        `RayHits` for every pixel.
    """
    return MeshCaster(vertices, faces).first_hits(intrinsics, width, height, region)


class BoxHits(NamedTuple):
    """Per-pixel hits of the rays with an axis-aligned box of another frame (see `cast_box`)."""

    distance: np.ndarray
    """(H, W) float64, ray parameter λ of the hit (= camera z for unit-z rays); inf where missed."""
    normal_axis: np.ndarray
    """(H, W) int64, axis (0, 1, 2) of the box face that was hit."""


def cast_box(rays: np.ndarray, origin: np.ndarray, lower: np.ndarray, upper: np.ndarray, inside: bool) -> BoxHits:
    """Closed-form ray/box intersection (slab method) for boxes that need no triangles.

    Args:
        rays: (H, W, 3) float32 or float64, ray directions in the box's frame; results keep its dtype.
        origin: (3,) float, the common ray origin in the box's frame.
        lower: (3,) float, minimum box corner.
        upper: (3,) float, maximum box corner.
        inside: True for a box around the origin (returns where the rays leave it), False for the
            first entry of rays coming from outside.

    Returns:
        `BoxHits`.
    """
    shape = rays.shape[:2]
    near_best, near_axis = np.full(shape, -np.inf, dtype=rays.dtype), np.zeros(shape, dtype=np.int64)
    far_best, far_axis = np.full(shape, np.inf, dtype=rays.dtype), np.zeros(shape, dtype=np.int64)
    for axis in range(3):  # 2-D arrays per axis: much faster than reductions over a last axis of 3
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = 1.0 / rays[:, :, axis]
            # Python floats keep the arithmetic in the rays' dtype (float32 stays float32)
            first = float(lower[axis] - origin[axis]) * inverse
            second = float(upper[axis] - origin[axis]) * inverse
        near, far = np.fmin(first, second), np.fmax(first, second)  # fmin/fmax ignore a 0·inf NaN
        if not inside:
            better = near > near_best
            near_best[better], near_axis[better] = near[better], axis
        better = far < far_best
        far_best[better], far_axis[better] = far[better], axis
    if inside:
        return BoxHits(np.where(far_best > 0, far_best, np.inf), far_axis)
    hit = (near_best <= far_best) & (near_best > 0)
    return BoxHits(np.where(hit, near_best, np.inf), near_axis)
