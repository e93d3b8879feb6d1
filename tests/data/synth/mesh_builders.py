"""Mesh files written by code for the ``synth --models`` tests and benchmark.

`write_textured_box`: an OBJ box (+ MTL + PNG texture) whose every side maps the whole texture, the
texture being four 32×32 quadrants of known colours. `write_coloured_box_ply`: a PLY box with vertex
colours red at its minimum x and blue at its maximum x. `write_textured_sphere`: a textured OBJ sphere
with a chosen number of faces (benchmark meshes).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import trimesh

QUADRANT_COLOURS = {
    "top_left": (255, 0, 0),
    "top_right": (0, 255, 0),
    "bottom_left": (0, 0, 255),
    "bottom_right": (255, 255, 255),
}
"""Texture quadrants (image rows 0–31 are the top), RGB; top = v > 0.5, left = u < 0.5."""

# corners of each box side in units of the box (0/1 per axis), ordered so that uv (0,0),(1,0),(1,1),(0,1)
# runs along +u then +v; the +z side is (x → u, y → v)
_SIDES = {
    "+z": ((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)),
    "-z": ((1, 0, 0), (0, 0, 0), (0, 1, 0), (1, 1, 0)),
    "+x": ((1, 0, 1), (1, 0, 0), (1, 1, 0), (1, 1, 1)),
    "-x": ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)),
    "+y": ((0, 1, 1), (1, 1, 1), (1, 1, 0), (0, 1, 0)),
    "-y": ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)),
}


def quadrant_texture() -> np.ndarray:
    """(64, 64, 3) uint8 RGB texture of the four `QUADRANT_COLOURS`."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:32, :32] = QUADRANT_COLOURS["top_left"]
    image[:32, 32:] = QUADRANT_COLOURS["top_right"]
    image[32:, :32] = QUADRANT_COLOURS["bottom_left"]
    image[32:, 32:] = QUADRANT_COLOURS["bottom_right"]
    return image


def write_textured_box(folder: Path, name: str, lower, extents, texture_name: str | None = None) -> Path:
    """Write ``<name>.obj``, ``<name>.mtl`` and the quadrant texture PNG; returns the OBJ path.

    Args:
        folder: where the files go (created).
        name: file stem.
        lower: (3,) minimum corner, file units.
        extents: (3,) side lengths, file units.
        texture_name: PNG file name the MTL names (default ``<name>.png``); the file is written only under
            the default name, so another name makes a missing texture.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lower, extents = np.asarray(lower, float), np.asarray(extents, float)
    png = f"{name}.png"
    cv2.imwrite(str(folder / png), quadrant_texture()[:, :, ::-1])
    (folder / f"{name}.mtl").write_text(f"newmtl skin\nKd 1 1 1\nmap_Kd {texture_name or png}\n")
    lines = [f"mtllib {name}.mtl\n", "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n", "usemtl skin\n"]
    for index, corners in enumerate(_SIDES.values()):
        for corner in corners:
            x, y, z = lower + np.asarray(corner) * extents
            lines.append(f"v {x:.9f} {y:.9f} {z:.9f}\n")
        a, b, c, d = (4 * index + k for k in range(1, 5))
        lines.append(f"f {a}/1 {b}/2 {c}/3\nf {a}/1 {c}/3 {d}/4\n")
    path = folder / f"{name}.obj"
    path.write_text("".join(lines))
    return path


def expected_quadrant(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(M, 3) uint8 texture colour at uv points away from the quadrant borders."""
    colours = np.empty(u.shape + (3,), np.uint8)
    for key, colour in QUADRANT_COLOURS.items():
        vertical, horizontal = key.split("_")
        selected = ((v > 0.5) == (vertical == "top")) & ((u < 0.5) == (horizontal == "left"))
        colours[selected] = colour
    return colours


def write_coloured_box_ply(path: Path, lower, extents) -> Path:
    """A box PLY whose vertex colours are red at minimum x and blue at maximum x."""
    path.parent.mkdir(parents=True, exist_ok=True)
    box = trimesh.creation.box(extents=extents)
    box.apply_translation(np.asarray(lower, float) + np.asarray(extents, float) / 2)
    at_max = box.vertices[:, 0] > box.vertices[:, 0].mean()
    colours = np.where(at_max[:, None], [0, 0, 255, 255], [255, 0, 0, 255]).astype(np.uint8)
    trimesh.Trimesh(box.vertices, box.faces, vertex_colors=colours, process=False).export(path)
    return path


def write_textured_sphere(folder: Path, name: str, faces: int, radius: float = 0.05) -> Path:
    """A UV-mapped sphere OBJ (+ MTL + quadrant PNG) with about `faces` triangles (metres)."""
    folder.mkdir(parents=True, exist_ok=True)
    rings = max(int(np.sqrt(faces / 2)), 4)
    segments = max(faces // (2 * rings), 4)
    theta = np.linspace(0.0, np.pi, rings + 1)
    phi = np.linspace(0.0, 2 * np.pi, segments + 1)
    grid_theta, grid_phi = np.meshgrid(theta, phi, indexing="ij")
    vertices = radius * np.stack(
        [np.sin(grid_theta) * np.cos(grid_phi), np.cos(grid_theta), np.sin(grid_theta) * np.sin(grid_phi)], axis=-1
    ).reshape(-1, 3)
    uv = np.stack([grid_phi / (2 * np.pi), 1.0 - grid_theta / np.pi], axis=-1).reshape(-1, 2)
    index = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    quads = np.stack([index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]], axis=-1).reshape(-1, 4)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    cv2.imwrite(str(folder / f"{name}.png"), quadrant_texture()[:, :, ::-1])
    (folder / f"{name}.mtl").write_text(f"newmtl skin\nKd 1 1 1\nmap_Kd {name}.png\n")
    lines = [f"mtllib {name}.mtl\nusemtl skin\n"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices]
    lines += [f"vt {u:.6f} {v:.6f}\n" for u, v in uv]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in triangles + 1]
    path = folder / f"{name}.obj"
    path.write_text("".join(lines))
    return path
