"""Procedural object shapes in the canonical NOCS frame, one family per category.

Every mesh returned by `build_shape` is watertight (possibly several closed components that touch
or interpenetrate, never a boolean result), centred on its tight axis-aligned bounding box, and
scaled so that the box diagonal is 1 (the NOCS normalized object frame). Axes: **y up**, objects
rest on the plane ``y = min y``. Facing conventions per category (all in that frame):

* bottle, can, bowl, glass: solids/shells of revolution about +y; no preferred facing.
* mug (NOCS) and cup (HouseCat6D): body of revolution about +y, the **handle points to +x**
  (this is why SPD shifts mug point clouds along x only).
* laptop: the hinge runs along x at the back (−z); the base lies in the xz plane with the keyboard
  facing +y; the screen rises from the hinge, opened by the hinge angle θ (angle between base and
  screen, 70°–145°), its display facing the user at +z.
* camera: body width along x, top (viewfinder hump, shutter button) at +y, **lens axis +z**
  (the lens points to +z).
* box: sides along the axes, largest face down.
* remote: long axis z, buttons on the +y face, IR emitter end at +z.
* teapot: body of revolution about +y, **spout to +x, handle to −x**, lid knob at +y.
* cutlery (spoon, fork, knife): flat in the xz plane (thin along y), long axis z, handle at −z,
  working end (bowl, tines, blade) at +z.
* tube (toothpaste-like): lying flat, long axis z, round screw cap at +z, crimped flat end at −z.
* shoe: sole at −y, toe at +z, heel at −z, opening at the top rear.

Instances: a shape is fixed by a parameter vector ``u ∈ [0, 1]^k`` (one entry per named parameter,
mapped linearly to the ranges in `PARAMETER_RANGES`). The first parameter of every category is its
"held-out axis" (always a proportion that survives the unit-diagonal normalization, never the
laptop hinge angle or the cutlery kind, which vary in every split): training instances never draw it
from `HELD_OUT_BAND`, test instances always do, so test-split shapes are novel interpolations of the
training family.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import trimesh

from cleanpose.data.synth.textures import SurfaceColours

logger = logging.getLogger(__name__)

NOCS_CATEGORIES = ("bottle", "bowl", "camera", "can", "laptop", "mug")
"""NOCS categories in class-id order (class_id = index + 1)."""

HOUSECAT6D_CATEGORIES = ("box", "bottle", "can", "cup", "remote", "teapot", "cutlery", "glass", "shoe", "tube")
"""HouseCat6D categories in class-id order (class_id = index + 1)."""

HELD_OUT_BAND = (0.42, 0.62)
"""Interval of the first unit parameter reserved for test-split (novel) instances."""

_SECTIONS = 32  # angular resolution of revolved and swept parts

# Parameter names and (low, high) ranges per category; values are in arbitrary pre-normalization
# units (roughly centimetres) except angles (degrees) and ratios.
PARAMETER_RANGES: dict[str, tuple[tuple[str, float, float], ...]] = {
    "bottle": (
        ("body_height", 10.0, 24.0),
        ("body_radius", 2.5, 5.0),
        ("shoulder", 0.1, 0.35),
        ("neck_radius", 0.25, 0.45),
        ("neck_height", 1.5, 6.0),
        ("waist", 0.0, 0.15),
    ),
    "bowl": (
        ("height_ratio", 0.28, 0.62),
        ("radius", 6.0, 12.0),
        ("foot_ratio", 0.3, 0.6),
        ("wall", 0.3, 0.8),
        ("flare", 0.0, 1.0),
    ),
    "camera": (
        ("height_ratio", 0.5, 0.8),
        ("width", 9.0, 15.0),
        ("depth_ratio", 0.3, 0.6),
        ("lens_radius_ratio", 0.22, 0.38),
        ("lens_length_ratio", 0.15, 0.9),
        ("hump", 0.0, 1.0),
    ),
    "can": (("height_ratio", 0.9, 2.4), ("radius", 3.0, 5.5), ("rim", 0.02, 0.08), ("taper", 0.0, 0.12)),
    "laptop": (
        ("depth_ratio", 0.62, 0.78),
        ("width", 28.0, 40.0),
        ("hinge_angle_deg", 70.0, 145.0),
        ("base_thickness", 0.8, 2.2),
        ("screen_thickness", 0.4, 1.0),
    ),
    "mug": (
        ("height_ratio", 0.7, 1.5),
        ("radius", 3.5, 5.0),
        ("wall", 0.25, 0.5),
        ("handle_size", 0.55, 0.9),
        ("handle_thickness", 0.35, 0.7),
        ("taper", -0.12, 0.15),
    ),
    "box": (("width_ratio", 0.3, 0.9), ("length", 8.0, 30.0), ("height_ratio", 0.15, 0.9)),
    "cup": (
        ("height_ratio", 0.8, 1.6),
        ("radius", 3.0, 4.5),
        ("wall", 0.2, 0.4),
        ("handle_size", 0.5, 0.8),
        ("handle_thickness", 0.3, 0.6),
        ("taper", 0.0, 0.25),
    ),
    "remote": (
        ("width_ratio", 0.2, 0.35),
        ("length", 12.0, 22.0),
        ("thickness_ratio", 0.08, 0.16),
        ("buttons", 2.0, 6.0),
        ("rounding", 0.2, 0.9),
    ),
    "teapot": (
        ("height_ratio", 0.6, 1.1),
        ("body_radius", 6.0, 10.0),
        ("spout_length", 0.4, 0.8),
        ("handle_size", 0.5, 0.8),
        ("lid_ratio", 0.3, 0.55),
    ),
    "cutlery": (
        ("width", 1.0, 2.0),
        ("length", 15.0, 22.0),
        ("kind", 0.0, 2.999),
        ("head_ratio", 0.25, 0.4),
        ("thickness", 0.15, 0.3),
    ),
    "glass": (
        ("height_ratio", 1.2, 2.6),
        ("radius", 3.0, 4.5),
        ("wall", 0.12, 0.25),
        ("stem", 0.0, 1.0),
        ("taper", -0.1, 0.3),
    ),
    "shoe": (
        ("width_ratio", 0.32, 0.42),
        ("length", 24.0, 30.0),
        ("height_ratio", 0.3, 0.5),
        ("toe_lift", 0.0, 0.15),
        ("heel", 0.0, 0.3),
    ),
    "tube": (("length", 12.0, 20.0), ("radius", 1.3, 2.2), ("cap_ratio", 0.6, 0.9), ("flatness", 0.08, 0.2)),
}


class ShapeMesh(NamedTuple):
    """A normalized category shape."""

    mesh: trimesh.Trimesh
    """Watertight mesh, canonical NOCS frame, tight box centred at 0 with diagonal 1."""
    handle_faces: np.ndarray
    """(F,) bool, True for faces of a mug/cup handle (drives handle visibility); all False otherwise."""
    colours: SurfaceColours | None = None
    """Texture or vertex colours of an imported mesh (`cleanpose.data.synth.textures`); None: the renderer
    paints the mesh with a random procedural pattern."""


# --------------------------------------------------------------------------------------------
# primitive constructions (each returns a closed, outward-oriented mesh)


def _oriented(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _revolve(profile: np.ndarray, sections: int = _SECTIONS) -> trimesh.Trimesh:
    """Revolve a (radius, height) polyline about +y; it must start and end on the axis (radius 0)."""
    mesh = trimesh.creation.revolve(np.asarray(profile, dtype=np.float64), sections=sections)
    # trimesh revolves about +z; rotate -90° about x so that the revolution axis becomes +y.
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    return _oriented(mesh)


def _loft(rings: list[np.ndarray]) -> trimesh.Trimesh:
    """Join closed rings (each (M, 3), same M, same winding) with quads; cap both ends with fans."""
    rings = [np.asarray(ring, dtype=np.float64) for ring in rings]
    count = rings[0].shape[0]
    vertices = np.concatenate(rings + [rings[0].mean(axis=0)[None], rings[-1].mean(axis=0)[None]])
    faces = []
    index = np.arange(count)
    following = (index + 1) % count
    for level in range(len(rings) - 1):
        low, high = level * count, (level + 1) * count
        faces.append(np.stack([low + index, low + following, high + following], axis=1))
        faces.append(np.stack([low + index, high + following, high + index], axis=1))
    first_cap, last_cap = len(rings) * count, len(rings) * count + 1
    faces.append(np.stack([np.full(count, first_cap), following, index], axis=1))
    last = (len(rings) - 1) * count
    faces.append(np.stack([np.full(count, last_cap), last + index, last + following], axis=1))
    mesh = trimesh.Trimesh(vertices, np.concatenate(faces), process=True)
    return _oriented(mesh)


def _circle(
    center: np.ndarray,
    normal: np.ndarray,
    radius_u: float,
    radius_v: float | None = None,
    count: int = 16,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """(count, 3) points of an ellipse around `center` in the plane orthogonal to `normal`."""
    normal = np.asarray(normal, dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    reference = np.array([0.0, 1.0, 0.0]) if reference is None else np.asarray(reference, dtype=np.float64)
    if abs(normal @ reference) > 0.95:
        reference = np.array([1.0, 0.0, 0.0])
    axis_u = np.cross(reference, normal)
    axis_u /= np.linalg.norm(axis_u)
    axis_v = np.cross(normal, axis_u)
    angles = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    radius_v = radius_u if radius_v is None else radius_v
    return center + radius_u * np.cos(angles)[:, None] * axis_u + radius_v * np.sin(angles)[:, None] * axis_v


def _sweep_tube(path: np.ndarray, radius: float, count: int = 12) -> trimesh.Trimesh:
    """A closed tube of circular section swept along a (P, 3) polyline."""
    path = np.asarray(path, dtype=np.float64)
    tangents = np.gradient(path, axis=0)
    rings = [
        _circle(point, tangent, radius, count=count, reference=np.array([0.0, 0.0, 1.0]))
        for point, tangent in zip(path, tangents)
    ]
    return _loft(rings)


def _box(extents, center=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))


def _cylinder(radius: float, height: float, center, axis=(0.0, 1.0, 0.0), sections: int = _SECTIONS) -> trimesh.Trimesh:
    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)  # axis +z
    align = trimesh.geometry.align_vectors([0.0, 0.0, 1.0], axis)
    mesh.apply_transform(align)
    mesh.apply_translation(center)
    return mesh


def _ellipsoid(radii, center) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.vertices = mesh.vertices * np.asarray(radii) + np.asarray(center)
    return mesh


def _join(parts: list[trimesh.Trimesh], handle_parts: tuple[int, ...] = ()) -> ShapeMesh:
    """Concatenate closed parts into one mesh and normalize it to the NOCS frame."""
    handle = np.concatenate([np.full(len(part.faces), i in handle_parts) for i, part in enumerate(parts)])
    mesh = trimesh.util.concatenate(parts)
    lower, upper = mesh.bounds
    mesh.apply_translation(-(lower + upper) / 2)
    mesh.apply_scale(1.0 / np.linalg.norm(upper - lower))
    return ShapeMesh(mesh, handle.astype(bool))


def _cup_profile(radius: float, height: float, wall: float, taper: float, foot: float = 1.0) -> np.ndarray:
    """Closed (r, y) profile of a hollow cup: outer bottom → outer wall → rim → inner wall → inner bottom."""
    top = radius
    bottom = radius * (1.0 - taper) * foot
    floor = max(wall, 0.06 * height)
    inner_top, inner_bottom = top - wall, max(bottom - wall, 0.2 * bottom)
    return np.array(
        [
            [0.0, 0.0],
            [bottom, 0.0],
            [top, height],
            [inner_top, height],
            [inner_bottom, floor],
            [0.0, floor],
        ]
    )


def _handle_path(x_wall: float, y_low: float, y_high: float, reach: float, count: int = 14) -> np.ndarray:
    """A C-shaped handle centre line in the xy plane, attached at x = x_wall, bulging to +x."""
    angles = np.linspace(-np.pi / 2, np.pi / 2, count)
    y_mid, y_half = (y_low + y_high) / 2, (y_high - y_low) / 2
    return np.stack([x_wall + reach * np.cos(angles), y_mid + y_half * np.sin(angles), np.zeros(count)], axis=1)


# --------------------------------------------------------------------------------------------
# category builders: each takes the parameter dict (physical values) and returns ShapeMesh


def _bottle(p) -> ShapeMesh:
    height, radius = p["body_height"], p["body_radius"]
    shoulder_start = height * (1.0 - p["shoulder"])
    neck = radius * p["neck_radius"]
    waist = radius * (1.0 - p["waist"])
    top = height + p["neck_height"]
    profile = [
        [0.0, 0.0],
        [radius * 0.92, 0.0],
        [radius, 0.04 * height],
        [waist, 0.45 * height],
        [radius, 0.75 * shoulder_start],
        [radius, shoulder_start],
    ]
    for fraction in np.linspace(0.2, 1.0, 5):
        blend = 0.5 - 0.5 * np.cos(np.pi * fraction)
        profile.append([radius + (neck - radius) * blend, shoulder_start + (height - shoulder_start) * fraction])
    profile += [[neck, top - 0.3], [neck * 1.12, top - 0.25], [neck * 1.12, top], [0.0, top]]
    return _join([_revolve(np.array(profile))])


def _bowl(p) -> ShapeMesh:
    radius = p["radius"]
    height = radius * p["height_ratio"]
    wall = p["wall"]
    foot = radius * p["foot_ratio"]
    angles = np.linspace(0.0, 1.0, 8)
    # outer wall: from foot to rim, bulging (flare 0 = round, 1 = conical)
    curve = np.sqrt(angles) * (1.0 - p["flare"]) + angles * p["flare"]
    outer = np.stack([foot + (radius - foot) * curve, height * angles], axis=1)
    inner = np.stack([np.maximum(outer[::-1, 0] - wall, 0.05), np.maximum(outer[::-1, 1], wall * 1.2)], axis=1)
    inner[0, 1] = height
    profile = np.concatenate([[[0.0, 0.0]], outer, inner, [[0.0, wall * 1.2]]])
    return _join([_revolve(profile)])


def _can(p) -> ShapeMesh:
    radius = p["radius"]
    height = radius * p["height_ratio"]
    rim = height * p["rim"]
    narrow = radius * (1.0 - p["taper"])
    profile = np.array(
        [
            [0.0, 0.0],
            [narrow * 0.95, 0.0],
            [narrow, rim],
            [radius, rim * 2.0],
            [radius, height - rim * 2.0],
            [narrow, height - rim],
            [narrow * 0.97, height],
            [narrow * 0.85, height - rim * 0.5],
            [0.0, height - rim * 0.5],
        ]
    )
    return _join([_revolve(profile)])


def _camera(p) -> ShapeMesh:
    width = p["width"]
    height, depth = width * p["height_ratio"], width * p["depth_ratio"]
    lens_radius = height * p["lens_radius_ratio"] * 1.2
    lens_length = depth * p["lens_length_ratio"] * 1.5 + 0.3
    parts = [_box([width, height, depth], [0.0, height / 2, 0.0])]
    lens_center_z = depth / 2 + lens_length / 2 - 0.05
    parts.append(_cylinder(lens_radius, lens_length, [0.0, height * 0.5, lens_center_z], axis=(0.0, 0.0, 1.0)))
    parts.append(
        _cylinder(
            lens_radius * 1.08,
            lens_length * 0.25,
            [0.0, height * 0.5, depth / 2 + lens_length - lens_length * 0.125 - 0.05],
            axis=(0.0, 0.0, 1.0),
        )
    )
    if p["hump"] > 0.35:  # a DSLR-like viewfinder hump on top
        hump = height * 0.25 * p["hump"]
        parts.append(_box([width * 0.3, hump + 0.1, depth * 0.7], [0.0, height + hump / 2 - 0.05, 0.0]))
    parts.append(_cylinder(width * 0.05, height * 0.08 + 0.05, [width * 0.32, height + height * 0.04 - 0.02, 0.0]))
    parts.append(_box([width * 0.18, height * 0.9, depth * 0.35], [width * 0.36, height * 0.45, depth / 2]))
    return _join(parts)


def _laptop(p) -> ShapeMesh:
    width = p["width"]
    depth = width * p["depth_ratio"]
    base_thickness, screen_thickness = p["base_thickness"], p["screen_thickness"]
    angle = np.deg2rad(p["hinge_angle_deg"])
    base = _box([width, base_thickness, depth], [0.0, base_thickness / 2, 0.0])
    # screen: a slab hinged at (y = base top, z = -depth/2), rotated about x by the hinge angle
    screen = _box([width * 0.98, depth * 0.95, screen_thickness], [0.0, depth * 0.95 / 2, -screen_thickness / 2])
    # closed screen lies on the base (display facing -y); open it by `angle` about the hinge line
    closed = trimesh.transformations.rotation_matrix(np.pi / 2, [1.0, 0.0, 0.0])  # +y → +z
    opening = trimesh.transformations.rotation_matrix(-angle, [1.0, 0.0, 0.0])
    hinge = trimesh.transformations.translation_matrix([0.0, base_thickness, -depth / 2])
    screen.apply_transform(hinge @ opening @ closed)
    return _join([base, screen])


def _mug_like(p, scale_handle: float = 1.0) -> ShapeMesh:
    radius = p["radius"]
    height = radius * 2.0 * p["height_ratio"]
    body = _revolve(_cup_profile(radius, height, p["wall"], p["taper"]))
    handle_radius = radius * 0.15 * p["handle_thickness"] * 1.6 * scale_handle
    y_low, y_high = height * (0.5 - 0.32 * p["handle_size"]), height * (0.5 + 0.32 * p["handle_size"])
    # attach inside the wall so the handle ends are buried in the body
    wall_x = radius * (1.0 - p["taper"] * 0.5) - p["wall"] * 0.5
    handle = _sweep_tube(_handle_path(wall_x, y_low, y_high, radius * 0.55 * p["handle_size"] + 1.0), handle_radius)
    return _join([body, handle], handle_parts=(1,))


def _mug(p) -> ShapeMesh:
    return _mug_like(p)


def _cup(p) -> ShapeMesh:
    return _mug_like(p, scale_handle=0.8)


def _box_shape(p) -> ShapeMesh:
    length = p["length"]
    width = length * p["width_ratio"]
    height = min(width, length) * p["height_ratio"] * 1.5
    return _join([_box([width, height, length], [0.0, height / 2, 0.0])])


def _rounded_rect_ring(half_x: float, half_y: float, rounding: float, z: float, y_offset: float, count: int = 24):
    """A (count, 3) ring: superellipse-like rounded rectangle in the xy plane at depth z."""
    angles = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    exponent = 2.0 / (2.0 + 8.0 * (1.0 - rounding))
    cosine, sine = np.cos(angles), np.sin(angles)
    x = half_x * np.sign(cosine) * np.abs(cosine) ** exponent
    y = half_y * np.sign(sine) * np.abs(sine) ** exponent + y_offset
    return np.stack([x, y, np.full(count, z)], axis=1)


def _remote(p) -> ShapeMesh:
    length = p["length"]
    width, thickness = length * p["width_ratio"], length * p["thickness_ratio"]
    rings = [
        _rounded_rect_ring(
            width / 2 * (0.9 + 0.1 * np.sin(np.pi * t)),
            thickness / 2,
            p["rounding"],
            -length / 2 + length * t,
            thickness / 2,
        )
        for t in np.linspace(0.0, 1.0, 6)
    ]
    parts = [_loft(rings)]
    buttons = int(p["buttons"])
    for index in range(buttons):
        z = length * (0.35 - 0.55 * index / max(buttons - 1, 1))
        parts.append(_cylinder(width * 0.12, thickness * 0.3, [0.0, thickness * 1.05, z], sections=12))
    parts.append(_box([width * 0.3, thickness * 0.3, length * 0.04], [0.0, thickness * 0.55, length / 2 - 0.05]))
    return _join(parts)


def _teapot(p) -> ShapeMesh:
    radius = p["body_radius"]
    height = radius * 2.0 * p["height_ratio"]
    heights = np.linspace(0.0, 1.0, 9)
    radii = radius * (0.65 + 0.35 * np.sin(np.pi * (0.15 + 0.75 * heights)))
    lid = radius * p["lid_ratio"]
    profile = np.concatenate(
        [
            [[0.0, 0.0]],
            np.stack([radii, height * heights], axis=1),
            [
                [lid, height],
                [lid * 0.9, height * 1.08],
                [lid * 0.25, height * 1.1],
                [lid * 0.3, height * 1.18],
                [0.0, height * 1.2],
            ],
        ]
    )
    body = _revolve(profile)
    spout_length = radius * p["spout_length"] * 1.8
    spout_path = np.array(
        [[radius * 0.7 + spout_length * t, height * (0.3 + 0.55 * t**1.5), 0.0] for t in np.linspace(0.0, 1.0, 10)]
    )
    spout = _sweep_tube(spout_path, radius * 0.12)
    handle_path = _handle_path(
        0.0,
        height * (0.5 - 0.3 * p["handle_size"]),
        height * (0.5 + 0.3 * p["handle_size"]),
        radius * 0.5 * p["handle_size"] + radius * 0.2,
    )
    handle_path[:, 0] = -(handle_path[:, 0] + radius * 0.75)
    handle = _sweep_tube(handle_path, radius * 0.08)
    return _join([body, spout, handle])


def _cutlery(p) -> ShapeMesh:
    kind = int(p["kind"])  # 0 spoon, 1 fork, 2 knife
    length, width, thickness = p["length"], p["width"], p["thickness"]
    head = length * p["head_ratio"]
    handle_length = length - head
    parts = [_box([width * 0.8, thickness, handle_length], [0.0, thickness / 2, -length / 2 + handle_length / 2])]
    head_center = length / 2 - head / 2
    if kind == 0:
        parts.append(_ellipsoid([width * 1.4, thickness * 2.5, head / 2], [0.0, thickness * 2.5, head_center]))
    elif kind == 1:
        parts.append(_box([width * 1.6, thickness, head * 0.35], [0.0, thickness / 2, head_center - head * 0.3]))
        for offset in np.linspace(-0.6, 0.6, 4) * width:
            parts.append(
                _box([width * 0.22, thickness, head * 0.7], [offset, thickness / 2, head_center + head * 0.15])
            )
    else:
        blade = np.array([[-width * 0.6, 0.0], [width * 0.7, 0.0], [width * 0.5, head], [-width * 0.6, head * 0.8]])
        rings = []
        for y in (0.0, thickness * 0.7):
            rings.append(np.stack([blade[:, 0], np.full(4, y), length / 2 - head + blade[:, 1]], axis=1))
        parts.append(_loft(rings))
    return _join(parts)


def _glass(p) -> ShapeMesh:
    radius = p["radius"]
    height = radius * p["height_ratio"] * 1.5
    wall = p["wall"]
    if p["stem"] > 0.5:  # wine glass: foot, stem, bowl
        bowl_bottom = height * 0.45
        profile = np.array(
            [
                [0.0, 0.0],
                [radius * 0.8, 0.0],
                [radius * 0.8, 0.25],
                [radius * 0.12, 0.4],
                [radius * 0.12, bowl_bottom],
                [radius * 0.7, bowl_bottom + 0.15 * height],
                [radius, height * 0.85],
                [radius * (1.0 - p["taper"] * 0.5), height],
                [radius * (1.0 - p["taper"] * 0.5) - wall, height],
                [radius - wall, height * 0.85],
                [radius * 0.7 - wall, bowl_bottom + 0.15 * height],
                [0.0, bowl_bottom + wall * 2],
            ]
        )
    else:
        profile = _cup_profile(radius, height, wall, p["taper"])
    return _join([_revolve(profile)])


def _shoe(p) -> ShapeMesh:
    length = p["length"]
    width, height = length * p["width_ratio"], length * p["height_ratio"]
    rings = []
    for t in np.linspace(0.0, 1.0, 12):  # t = 0 heel, 1 toe
        half_width = width / 2 * (0.7 + 0.3 * np.sin(np.pi * min(1.0, 0.2 + 0.9 * t)))
        top = height * (1.0 - 0.6 * t**1.5) if t < 0.95 else height * 0.3
        bottom = p["toe_lift"] * height * max(0.0, t - 0.8) * 5.0 + p["heel"] * height * 0.3 * max(0.0, 0.25 - t) * 4
        half_height = max((top - bottom) / 2, 0.5)
        rings.append(
            _circle(
                np.array([0.0, bottom + half_height, -length / 2 + length * t]),
                [0.0, 0.0, 1.0],
                half_width,
                half_height,
                count=20,
                reference=np.array([0.0, 1.0, 0.0]),
            )
        )
    sole = _box([width * 0.9, 0.6, length * 0.96], [0.0, 0.3, 0.0])
    return _join([_loft(rings), sole])


def _tube(p) -> ShapeMesh:
    length, radius = p["length"], p["radius"]
    rings = []
    for t in np.linspace(0.0, 1.0, 10):  # t = 0 crimped end (−z), 1 shoulder (+z)
        flat = p["flatness"] + (1.0 - p["flatness"]) * t**0.7
        spread = 1.0 + 0.4 * (1.0 - t)
        rings.append(
            _circle(
                np.array([0.0, radius, -length / 2 + length * 0.9 * t]),
                [0.0, 0.0, 1.0],
                radius * spread,
                radius * flat,
                count=16,
                reference=np.array([0.0, 1.0, 0.0]),
            )
        )
    cap_radius = radius * p["cap_ratio"]
    cap = _cylinder(
        cap_radius, length * 0.12, [0.0, radius, length / 2 - length * 0.06], axis=(0.0, 0.0, 1.0), sections=16
    )
    return _join([_loft(rings), cap])


_BUILDERS = {
    "bottle": _bottle,
    "bowl": _bowl,
    "camera": _camera,
    "can": _can,
    "laptop": _laptop,
    "mug": _mug,
    "box": _box_shape,
    "cup": _cup,
    "remote": _remote,
    "teapot": _teapot,
    "cutlery": _cutlery,
    "glass": _glass,
    "shoe": _shoe,
    "tube": _tube,
}


# --------------------------------------------------------------------------------------------
# public API


def _check_category(category: str) -> None:
    if category not in _BUILDERS:
        raise ValueError(f"unknown shape category {category!r}; known: {', '.join(sorted(_BUILDERS))}")


def sample_unit_parameters(category: str, generator: np.random.Generator, novel: bool) -> np.ndarray:
    """Draw the unit parameter vector of one instance.

    Args:
        category: a key of `PARAMETER_RANGES`.
        generator: source of the draws.
        novel: True for test-split instances (first entry inside `HELD_OUT_BAND`), False for training
            instances (first entry outside it).

    Returns:
        (k,) float64 in [0, 1].
    """
    _check_category(category)
    unit = generator.random(len(PARAMETER_RANGES[category]))
    low, high = HELD_OUT_BAND
    if novel:
        unit[0] = low + (high - low) * unit[0]
    else:  # map [0, 1) onto [0, low) ∪ [high, 1) keeping the draw uniform
        outside = low + (1.0 - high)
        value = unit[0] * outside
        unit[0] = value if value < low else value + (high - low)
    return unit


def shape_parameters(category: str, unit: np.ndarray) -> dict[str, float]:
    """Map a unit parameter vector to named physical parameters (linear in each range)."""
    _check_category(category)
    ranges = PARAMETER_RANGES[category]
    unit = np.asarray(unit, dtype=np.float64)
    if unit.shape != (len(ranges),):
        raise ValueError(f"{category}: unit parameters must have shape ({len(ranges)},); got {unit.shape}")
    return {name: float(low + (high - low) * value) for (name, low, high), value in zip(ranges, unit)}


def build_shape(category: str, unit: np.ndarray) -> ShapeMesh:
    """Build the normalized mesh of one instance from its unit parameter vector.

    Args:
        category: a NOCS or HouseCat6D category name.
        unit: (k,) float in [0, 1], e.g. from `sample_unit_parameters`.

    Returns:
        `ShapeMesh` in the canonical frame described in the module docstring.
    """
    return _BUILDERS[category](shape_parameters(category, unit))
