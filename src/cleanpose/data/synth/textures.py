"""Surface colours of imported meshes: texture images sampled at UV coordinates, or vertex/face colours.

A `SurfaceColours` gives every triangle three corner colours and, optionally, three UV corners into
one of its texture images. The albedo at a point of a triangle with barycentric coordinates
``(b0, b1, b2)`` is ``Σ b_i · colour_i`` times, for a textured triangle, the bilinear texture sample at
``Σ b_i · uv_i`` (the material's diffuse colour times its diffuse map, as OBJ/MTL and glTF define it).

UV convention (OBJ, and glTF as trimesh loads it): ``u`` runs left → right, ``v`` bottom → top of the
image; coordinates outside [0, 1] repeat. Colours are RGB in [0, 1].
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import trimesh

logger = logging.getLogger(__name__)

UNCOLOURED_GREY = 0.6
"""Albedo of the uncoloured parts of a mesh whose other parts carry colours."""


@dataclasses.dataclass(frozen=True, eq=False)
class SurfaceColours:
    """Per-triangle colour source of a mesh with F triangles."""

    corner_colours: np.ndarray
    """(F, 3, 3) float32 RGB in [0, 1] at the three corners (multiplies the texture sample)."""
    corner_uv: np.ndarray
    """(F, 3, 2) float32 texture coordinates of the corners; unused where `face_image` is −1."""
    face_image: np.ndarray
    """(F,) int32 index into `images`, −1 for an untextured triangle."""
    images: tuple[np.ndarray, ...]
    """Texture images, each (h, w, 3) uint8 RGB, row 0 at the top."""

    def albedo(self, faces: np.ndarray, barycentric: np.ndarray) -> np.ndarray:
        """Albedo at points given by triangle index and barycentric coordinates.

        Args:
            faces: (M,) int, triangle indices.
            barycentric: (M, 3) float, weights of the triangle's corners (sum 1).

        Returns:
            (M, 3) float64 RGB in [0, 1].
        """
        faces = np.asarray(faces, dtype=np.int64)
        weights = np.asarray(barycentric, dtype=np.float64)
        colour = np.einsum("mk,mkc->mc", weights, self.corner_colours[faces].astype(np.float64))
        image_index = self.face_image[faces]
        for index, image in enumerate(self.images):
            selected = np.flatnonzero(image_index == index)
            if len(selected):
                uv = np.einsum("mk,mkc->mc", weights[selected], self.corner_uv[faces[selected]].astype(np.float64))
                colour[selected] *= sample_bilinear(image, uv)
        return colour


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup with repeat wrapping.

    Texel ``(row r, column c)`` has its centre at ``u = (c + 0.5)/w``, ``v = 1 − (r + 0.5)/h``.

    Args:
        image: (h, w, 3) uint8 RGB.
        uv: (M, 2) float texture coordinates.

    Returns:
        (M, 3) float64 RGB in [0, 1].
    """
    height, width = image.shape[:2]
    column = np.mod(uv[:, 0], 1.0) * width - 0.5
    row = np.mod(1.0 - uv[:, 1], 1.0) * height - 0.5
    left, top = np.floor(column), np.floor(row)
    right_weight, bottom_weight = (column - left)[:, None], (row - top)[:, None]
    left, top = left.astype(np.int64), top.astype(np.int64)
    right, bottom = np.mod(left + 1, width), np.mod(top + 1, height)
    left, top = np.mod(left, width), np.mod(top, height)

    def texels(rows, columns):  # gather first: converting the whole image per call would dominate
        return image[rows, columns].astype(np.float64) / 255.0

    upper = texels(top, left) * (1 - right_weight) + texels(top, right) * right_weight
    lower = texels(bottom, left) * (1 - right_weight) + texels(bottom, right) * right_weight
    return upper * (1 - bottom_weight) + lower * bottom_weight


def _rgb(colour) -> np.ndarray:
    """(3,) float RGB in [0, 1] from a uint8 or float RGB(A) colour."""
    colour = np.asarray(colour)
    values = colour[:3].astype(np.float64)
    return values / 255.0 if colour.dtype.kind in "ui" or values.max() > 1.0 else values


def _material_colour_and_image(material) -> tuple[np.ndarray, np.ndarray | None]:
    """Diffuse colour (3,) and diffuse map (h, w, 3) uint8 or None of a trimesh material."""
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        factor = material.baseColorFactor
        colour = _rgb(factor) if factor is not None else np.ones(3)
        image = material.baseColorTexture
    else:
        diffuse = getattr(material, "diffuse", None)
        colour = _rgb(diffuse) if diffuse is not None else np.ones(3)
        image = getattr(material, "image", None)
    if image is None:
        return colour, None
    return colour, np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def colours_from_visual(mesh: trimesh.Trimesh) -> SurfaceColours | None:
    """The colour source a loaded trimesh carries: texture + UV, material colour, vertex or face colours.

    Args:
        mesh: a mesh as trimesh loads it (its ``visual`` unchanged).

    Returns:
        `SurfaceColours` of its F faces, or None when the file defines no colour at all.
    """
    visual = mesh.visual
    faces = np.asarray(mesh.faces, dtype=np.int64)
    count = len(faces)
    corner_uv = np.zeros((count, 3, 2), np.float32)
    face_image = np.full(count, -1, np.int32)
    images: tuple[np.ndarray, ...] = ()
    if isinstance(visual, trimesh.visual.TextureVisuals):
        if visual.material is None:
            return None
        colour, image = _material_colour_and_image(visual.material)
        corners = np.broadcast_to(colour.astype(np.float32), (count, 3, 3)).copy()
        if image is not None and visual.uv is not None and len(visual.uv) == len(mesh.vertices):
            corner_uv = np.asarray(visual.uv, dtype=np.float32)[faces]
            face_image[:] = 0
            images = (image,)
        return SurfaceColours(corners, corner_uv, face_image, images)
    if not getattr(visual, "defined", False):
        return None
    if visual.kind == "vertex":
        corners = (np.asarray(visual.vertex_colors)[:, :3].astype(np.float32) / 255.0)[faces]
    else:  # "face"
        per_face = np.asarray(visual.face_colors)[:, :3].astype(np.float32) / 255.0
        corners = np.repeat(per_face[:, None], 3, axis=1)
    return SurfaceColours(corners, corner_uv, face_image, images)


def concatenate_colours(parts: list[SurfaceColours | None], face_counts: list[int]) -> SurfaceColours | None:
    """Colour source of meshes concatenated in order; uncoloured parts get `UNCOLOURED_GREY`.

    Returns None when no part has colours (the renderer then paints the mesh procedurally).
    """
    if all(part is None for part in parts):
        return None
    corners, uvs, indices, images = [], [], [], []
    for part, count in zip(parts, face_counts):
        if part is None:
            part = SurfaceColours(
                np.full((count, 3, 3), UNCOLOURED_GREY, np.float32),
                np.zeros((count, 3, 2), np.float32),
                np.full(count, -1, np.int32),
                (),
            )
        corners.append(part.corner_colours)
        uvs.append(part.corner_uv)
        indices.append(np.where(part.face_image >= 0, part.face_image + len(images), -1).astype(np.int32))
        images.extend(part.images)
    return SurfaceColours(np.concatenate(corners), np.concatenate(uvs), np.concatenate(indices), tuple(images))
