"""Instance libraries, random table-top scenes and their rendering into per-frame arrays.

World frame: y up, the table top is the plane ``y = 0`` centred at the origin; objects rest on it.
Camera frame: OpenCV (x right, y down, z forward). Lengths are metres everywhere in this module.

Random draws: a scene is sampled from a `numpy.random.Generator` keyed by (seed, split, scene
index), a frame's lighting jitter, colour noise and depth noise by (seed, split, scene, frame), and
instance shapes by (seed, split, category, instance index). Results therefore do not depend on the
number of worker processes or on the order in which scenes are produced.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import hashlib
import logging

import numpy as np
import trimesh

from cleanpose.data.synth import shapes
from cleanpose.data.synth.backgrounds import Backdrop
from cleanpose.data.synth.mesh_library import MeshEntry, load_mesh
from cleanpose.data.synth.render import MeshCaster, cast_box, pixel_rays, projected_region
from cleanpose.data.synth.sensor import SensorNoise, apply_sensor_noise

logger = logging.getLogger(__name__)

NOCS_SYNSETS = {
    "bottle": "02876657",
    "bowl": "02880940",
    "camera": "02942699",
    "can": "02946921",
    "laptop": "03642806",
    "mug": "03797390",
}
"""ShapeNet synset of each NOCS category (docs/data_formats.md §1.7)."""

# Metric size (tight-box diagonal, metres) range per category.
DIAGONAL_RANGES = {
    "bottle": (0.18, 0.32),
    "bowl": (0.13, 0.24),
    "camera": (0.12, 0.22),
    "can": (0.10, 0.20),
    "laptop": (0.36, 0.50),
    "mug": (0.11, 0.17),
    "box": (0.10, 0.30),
    "cup": (0.09, 0.15),
    "remote": (0.14, 0.24),
    "teapot": (0.18, 0.30),
    "cutlery": (0.15, 0.23),
    "glass": (0.10, 0.22),
    "shoe": (0.24, 0.32),
    "tube": (0.12, 0.22),
}

# Categories that may be laid on their side (a stable pose for a cylinder).
_CAN_LIE_DOWN = {"bottle", "can", "glass"}

SPLIT_CODES = {"camera_train": 1, "camera_val": 2, "real_train": 3, "real_test": 4, "train": 5, "test": 6}
"""Stable integer per split, mixed into every random key."""


# --------------------------------------------------------------------------------------------
# instance libraries


@dataclasses.dataclass(frozen=True)
class Instance:
    """One object model of a library."""

    name: str
    """CAMERA model hash, REAL model name (``…_norm``) or HouseCat6D ``<class>-<name>``."""
    category: str
    class_id: int
    """1-based category id of the dataset."""
    unit: tuple[float, ...]
    """Unit shape parameters (see `shapes.sample_unit_parameters`)."""
    novel: bool
    """True when drawn from the held-out parameter band (test-split instances)."""
    synset: str | None = None
    """ShapeNet synset (CAMERA only)."""
    diagonal: float | None = None
    """Fixed metric tight-box diagonal in metres for metric models (REAL, HouseCat6D); None for
    CAMERA models, which are scaled per placement."""
    source: MeshEntry | None = None
    """The user's mesh file of an imported instance (`cleanpose.data.synth.mesh_library`); None for a
    procedural one (shape from `unit`)."""


@functools.lru_cache(maxsize=256)
def instance_mesh(category: str, unit: tuple[float, ...]) -> shapes.ShapeMesh:
    """The normalized mesh of an instance, cached per process."""
    return shapes.build_shape(category, np.asarray(unit))


def instance_shape(instance: Instance) -> shapes.ShapeMesh:
    """The normalized mesh of an instance: its imported mesh, or its procedural shape (both cached per process)."""
    if instance.source is not None:
        return load_mesh(instance.source).shape
    return instance_mesh(instance.category, instance.unit)


def build_library(dataset: str, split: str, seed: int, per_category: int) -> list[Instance]:
    """The object models of one split.

    Args:
        dataset: "nocs" or "housecat6d".
        split: a key of `SPLIT_CODES` ("camera_train", "real_test", "train", ...).
        seed: dataset seed.
        per_category: number of instances per category.

    Returns:
        Instances ordered by category then index; test/val splits hold novel shapes.
    """
    categories = shapes.NOCS_CATEGORIES if dataset == "nocs" else shapes.HOUSECAT6D_CATEGORIES
    novel = split in ("camera_val", "real_test", "test")
    library = []
    for class_index, category in enumerate(categories):
        for index in range(per_category):
            generator = np.random.default_rng([seed, SPLIT_CODES[split], 7, class_index, index])
            unit = tuple(float(value) for value in shapes.sample_unit_parameters(category, generator, novel))
            diagonal = float(generator.uniform(*DIAGONAL_RANGES[category]))
            if dataset == "housecat6d":
                name, synset = f"{category}-synth_{split}_{index:02d}", None
            elif split.startswith("camera"):
                key = f"cleanpose-synth:{seed}:{split}:{category}:{index}".encode()
                name, synset = hashlib.md5(key).hexdigest(), NOCS_SYNSETS[category]
            else:
                name, synset = f"{category}_synth_{split.split('_')[1]}{index}_norm", None
            metric = dataset == "housecat6d" or not split.startswith("camera")
            library.append(Instance(name, category, class_index + 1, unit, novel, synset, diagonal if metric else None))
    return library


DISTRACTOR_CATEGORIES = ("box", "remote", "teapot", "shoe")
"""Shape families used as class-0 distractor objects in NOCS scenes (skipped by the label rules)."""


def build_distractors(split: str, seed: int) -> tuple[Instance, ...]:
    """One class-0 distractor instance per `DISTRACTOR_CATEGORIES` entry for a NOCS split.

    CAMERA distractors carry a ShapeNet-like hash and the placeholder synset ``00000000``; REAL ones a
    ``distractor_<category>_<split>`` name. No model files are written for them: the preprocessing
    skips class 0 before it opens any model.
    """
    distractors = []
    for index, category in enumerate(DISTRACTOR_CATEGORIES):
        generator = np.random.default_rng([seed, SPLIT_CODES[split], 8, index])
        unit = tuple(float(value) for value in shapes.sample_unit_parameters(category, generator, False))
        diagonal = float(generator.uniform(*DIAGONAL_RANGES[category]))
        if split.startswith("camera"):
            name = hashlib.md5(f"cleanpose-synth-distractor:{seed}:{split}:{category}".encode()).hexdigest()
            distractors.append(Instance(name, category, 0, unit, False, "00000000", None))
        else:
            distractors.append(Instance(f"distractor_{category}_{split}", category, 0, unit, False, None, diagonal))
    return tuple(distractors)


# --------------------------------------------------------------------------------------------
# scenes


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Colours and texture of one surface."""

    base: np.ndarray
    """(3,) float RGB in [0, 1]."""
    second: np.ndarray
    """(3,) float RGB in [0, 1], the pattern colour."""
    pattern: int
    """0 plain, 1 stripes, 2 checker, 3 band."""
    frequency: float
    """Pattern repetitions per unit length of the pattern coordinate."""


@dataclasses.dataclass(frozen=True)
class PlacedObject:
    """An instance resting on the table."""

    instance: Instance
    scale: float
    """Metres per normalized unit (= tight-box diagonal in metres)."""
    rotation: np.ndarray
    """(3, 3) float64, normalized object frame → world."""
    translation: np.ndarray
    """(3,) float64, metres, world position of the object-frame origin."""
    appearance: Appearance


@dataclasses.dataclass(frozen=True)
class Camera:
    """A view: world → camera transform ``p_c = rotation @ p_w + translation``."""

    rotation: np.ndarray
    """(3, 3) float64."""
    translation: np.ndarray
    """(3,) float64, metres."""


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """Everything needed to render the frames of one scene."""

    objects: tuple[PlacedObject, ...]
    cameras: tuple[Camera, ...]
    table_half_size: float
    """Half side of the square table top, metres."""
    table: Appearance
    floor: Appearance
    wall: Appearance
    light_direction: np.ndarray
    """(3,) unit vector towards the light, world frame."""
    ambient: float


def _random_colour(generator: np.random.Generator, saturation=(0.2, 0.95), value=(0.25, 0.95)) -> np.ndarray:
    hue = generator.random()
    return np.array(colorsys.hsv_to_rgb(hue, generator.uniform(*saturation), generator.uniform(*value)))


def _random_appearance(generator: np.random.Generator, patterns=(0, 1, 2, 3), frequency=(2.0, 8.0)) -> Appearance:
    return Appearance(
        _random_colour(generator),
        _random_colour(generator),
        int(generator.choice(patterns)),
        float(generator.uniform(*frequency)),
    )


def _rotation_y(angle: float) -> np.ndarray:
    cosine, sine = np.cos(angle), np.sin(angle)
    return np.array([[cosine, 0.0, sine], [0.0, 1.0, 0.0], [-sine, 0.0, cosine]])


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(angle, axis)[:3, :3]


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> Camera:
    """OpenCV camera at `eye` looking at `target` with world +y appearing up (image y down).

    Args:
        eye: (3,) world position, metres.
        target: (3,) world position, metres.
        roll: rotation about the viewing axis, radians.
    """
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    up = np.array([0.0, 1.0, 0.0])
    down = -(up - (up @ forward) * forward)
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    camera_to_world = np.stack([right, down, forward], axis=1)
    camera_to_world = camera_to_world @ _axis_rotation(np.array([0.0, 0.0, 1.0]), roll)
    rotation = camera_to_world.T
    return Camera(rotation, -rotation @ eye)


def sample_scene(
    library: list[Instance],
    generator: np.random.Generator,
    num_frames: int,
    intrinsics: np.ndarray,
    image_size: tuple[int, int],
    objects_range: tuple[int, int] = (2, 6),
    distractors: tuple[Instance, ...] = (),
    distractor_probability: float = 0.4,
    category_offset: int = 0,
) -> SceneSpec:
    """Draw a table-top scene and its camera views.

    Args:
        library: instances to draw from (category first, then an instance). The first
            ``objects_range[0]`` objects take the categories ``category_offset``, ``category_offset + 1``, …
            (cyclically, in library order); the others draw their category uniformly.
        generator: source of every draw.
        num_frames: number of camera views.
        intrinsics: (3, 3) float, pixels; used to keep the objects in view.
        image_size: (W, H) pixels.
        objects_range: inclusive range of the number of objects.
        distractors: class-0 instances; with `distractor_probability` one of them joins the scene.
        distractor_probability: probability of adding a distractor (when `distractors` is not empty).
        category_offset: see `library`; scene i of a split passes ``i * objects_range[0]``, so that a split
            of at least ``K / objects_range[0]`` scenes holds every one of the K categories.

    Returns:
        `SceneSpec` with 2–6 (by default) objects and `num_frames` cameras at 0.3–1.5 m from the target.
    """
    categories = sorted({instance.category for instance in library}, key=[i.category for i in library].index)
    num_objects = int(generator.integers(objects_range[0], objects_range[1] + 1))
    region = 0.16 + 0.05 * num_objects
    placed: list[PlacedObject] = []
    footprints: list[tuple[np.ndarray, float]] = []

    def try_place(instance: Instance) -> bool:
        nonlocal region
        category = instance.category
        scale = float(generator.uniform(*DIAGONAL_RANGES[category]))
        if instance.diagonal is not None:
            scale = instance.diagonal
        rotation = _rotation_y(generator.uniform(0.0, 2 * np.pi))
        pose_kind = generator.random()
        if category in _CAN_LIE_DOWN and pose_kind < 0.12:
            rotation = _axis_rotation(np.array([1.0, 0.0, 0.0]), np.pi / 2) @ rotation
        elif pose_kind < 0.3:
            tilt_heading = generator.uniform(0.0, 2 * np.pi)
            tilt_axis = np.array([np.cos(tilt_heading), 0.0, np.sin(tilt_heading)])
            rotation = _axis_rotation(tilt_axis, np.deg2rad(generator.uniform(8.0, 25.0))) @ rotation
        vertices = scale * instance_shape(instance).mesh.vertices @ rotation.T
        radius = float(np.linalg.norm(vertices[:, [0, 2]], axis=1).max())
        angle, distance = generator.uniform(0.0, 2 * np.pi), region * np.sqrt(generator.random())
        centre = np.array([distance * np.cos(angle), 0.0, distance * np.sin(angle)])
        if any(np.linalg.norm(centre - other) < radius + other_radius + 0.01 for other, other_radius in footprints):
            region *= 1.02
            return False
        translation = centre - np.array([0.0, vertices[:, 1].min(), 0.0])
        pattern_choices = (0, 1, 2, 3) if category in ("bottle", "can", "mug", "cup", "glass") else (0, 1, 2)
        placed.append(
            PlacedObject(instance, scale, rotation, translation, _random_appearance(generator, pattern_choices))
        )
        footprints.append((centre, radius))
        return True

    attempts = 0
    while len(placed) < num_objects and attempts < 200:
        attempts += 1
        if len(placed) < objects_range[0]:
            category = categories[(category_offset + len(placed)) % len(categories)]
        else:
            category = categories[int(generator.integers(len(categories)))]
        choices = [instance for instance in library if instance.category == category]
        try_place(choices[int(generator.integers(len(choices)))])
    if distractors and generator.random() < distractor_probability:
        distractor = distractors[int(generator.integers(len(distractors)))]
        for _ in range(20):
            if try_place(distractor):
                break

    centres = np.array([obj.translation for obj in placed])
    scene_centre = centres.mean(axis=0)
    scene_radius = max(float(np.linalg.norm(centres - scene_centre, axis=1).max()) + 0.15, 0.15)
    width, height = image_size
    half_fov = np.arctan(min(width / intrinsics[0, 0], height / intrinsics[1, 1]) / 2)
    cameras = []
    for _ in range(num_frames):
        if generator.random() < 0.3:  # close-up on one object; the others may leave the view
            focus = placed[int(generator.integers(len(placed)))]
            target = focus.translation.copy()
            minimum = max(0.3, 0.9 * focus.scale / 2 / np.tan(half_fov))
        else:
            target = scene_centre + generator.normal(0.0, 0.03, 3)
            minimum = max(0.3, scene_radius / np.tan(half_fov))
        target[1] = generator.uniform(0.0, 0.08)
        minimum = min(minimum, 1.45)
        distance = minimum + (1.5 - minimum) * generator.random() ** 1.5  # favour closer views
        elevation = np.deg2rad(generator.uniform(18.0, 75.0))
        azimuth = generator.uniform(0.0, 2 * np.pi)
        eye = target + distance * np.array(
            [np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)]
        )
        cameras.append(look_at(eye, target, roll=np.deg2rad(generator.normal(0.0, 4.0))))

    light_elevation, light_azimuth = np.deg2rad(generator.uniform(35.0, 85.0)), generator.uniform(0, 2 * np.pi)
    light = np.array(
        [
            np.cos(light_elevation) * np.sin(light_azimuth),
            np.sin(light_elevation),
            np.cos(light_elevation) * np.cos(light_azimuth),
        ]
    )
    return SceneSpec(
        objects=tuple(placed),
        cameras=tuple(cameras),
        table_half_size=float(generator.uniform(0.6, 1.0)),
        table=_random_appearance(generator, (0, 1, 2), (3.0, 12.0)),
        floor=_random_appearance(generator, (0, 2), (0.5, 2.0)),
        wall=_random_appearance(generator, (0, 1), (0.5, 3.0)),
        light_direction=light,
        ambient=float(generator.uniform(0.25, 0.45)),
    )


# --------------------------------------------------------------------------------------------
# rendering a frame


@dataclasses.dataclass
class FrameArrays:
    """Rendered arrays of one frame (H rows, W columns); object index k refers to `SceneSpec.objects`."""

    color: np.ndarray
    """(H, W, 3) uint8 RGB."""
    depth: np.ndarray
    """(H, W) float64 metres, clean depth of everything (table, room, objects); 0 = no hit."""
    sensor_depth: np.ndarray
    """(H, W) float64 metres, `depth` after the sensor noise model; 0 = missing."""
    object_index: np.ndarray
    """(H, W) int16, index of the object seen at the pixel, −1 for table/room/nothing."""
    nocs: np.ndarray
    """(H, W, 3) float64, centred normalized object coordinate q of the hit (object pixels), else 0."""
    rotations: np.ndarray
    """(K, 3, 3) float64, normalized object → camera."""
    translations: np.ndarray
    """(K, 3) float64, metres, camera frame."""
    scales: np.ndarray
    """(K,) float64, metres per normalized unit."""
    handle_pixels: np.ndarray
    """(K,) int64, pixels showing a mug/cup handle (0 for other categories)."""


TABLE_THICKNESS = 0.04
"""Table top slab thickness, metres (its top face is the plane y = 0)."""

ROOM_LOWER = np.array([-2.5, -0.75, -2.5])
ROOM_UPPER = np.array([2.5, 2.05, 2.5])
"""Corners of the room box around the table (floor at y = −0.75 m), world frame, metres."""


def _pattern(appearance: Appearance, first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """(M, 3) albedo of points with pattern coordinates (first, second, third), each (M,)."""
    frequency = appearance.frequency
    if appearance.pattern == 1:
        weight = (np.sin(2 * np.pi * frequency * second) > 0.3).astype(np.float64)
    elif appearance.pattern == 2:
        cells = np.floor(frequency * first) + np.floor(frequency * second) + np.floor(frequency * third)
        weight = (cells % 2).astype(np.float64)
    elif appearance.pattern == 3:
        weight = (np.abs(second) < 0.18).astype(np.float64)
    else:
        weight = np.zeros_like(first)
    return appearance.base[None] * (1 - weight[:, None]) + appearance.second[None] * weight[:, None]


_world_caster_cache: list[tuple[SceneSpec, MeshCaster]] = []
"""The world-frame caster of the last scene rendered in this process (see `world_caster`)."""


def world_caster(scene: SceneSpec) -> MeshCaster:
    """Embree structure of the scene's objects in the world frame, built once per scene and process.

    The objects of a `SceneSpec` do not move between its frames (only the camera does), so one
    world-frame structure serves every frame: `render_frame` moves its rays into the world frame
    instead of rebuilding a structure from camera-frame vertices for each view. Faces are concatenated
    in `scene.objects` order, as `render_frame` does. The cache holds the last scene only and matches it
    by identity (``is``): a scene is frozen and the cache keeps it alive, so its id cannot be reused.
    Frames differ from a per-frame camera-frame build only where Embree's float32 rounding picks
    another triangle for a ray grazing an edge (see `MeshCaster`).
    """
    if _world_caster_cache and _world_caster_cache[0][0] is scene:
        return _world_caster_cache[0][1]
    vertex_blocks, face_blocks, offset = [], [], 0
    for placed in scene.objects:
        mesh = instance_shape(placed.instance).mesh
        vertex_blocks.append(placed.scale * mesh.vertices @ placed.rotation.T + placed.translation)
        face_blocks.append(mesh.faces + offset)
        offset += len(mesh.vertices)
    caster = MeshCaster(np.concatenate(vertex_blocks), np.concatenate(face_blocks))
    _world_caster_cache[:] = [(scene, caster)]
    return caster


def _shadowed(
    caster: MeshCaster,
    points: np.ndarray,
    normals: np.ndarray,
    diffuse: np.ndarray,
    owner: np.ndarray,
    light: np.ndarray,
    camera: Camera,
    intrinsics: np.ndarray,
    width: int,
    height: int,
) -> np.ndarray:
    """(H, W) bool: lit pixels whose ray towards the (directional) light hits an object.

    Shadow rays are cast only where a shadow can fall: inside the image boxes of the objects and of
    their shadows on the table plane (object vertices slid along the light onto y = 0).
    """
    vertices = caster.mesh.vertices
    table_normal = camera.rotation[:, 1]  # world +y in the camera frame
    along = (vertices - camera.translation) @ table_normal / max(float(light @ table_normal), 1e-3)
    footprint = vertices - along[:, None] * light
    region = projected_region(np.concatenate([vertices, footprint]), intrinsics, width, height)
    candidates = region & (owner > -3) & (diffuse > 0)
    shadowed = np.zeros((height, width), dtype=bool)
    origins = points[candidates] + 1e-4 * normals[candidates]  # step off the surface (0.1 mm)
    shadowed[candidates] = caster.blocked(origins, light)
    return shadowed


def _place_photo_plane(
    plane_depth: float,
    rays: np.ndarray,
    owner: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    cos_incidence: np.ndarray,
) -> np.ndarray:
    """Put the camera-facing photo plane ``z = plane_depth`` in front of every non-object hit beyond it.

    Updates the per-pixel arrays of `render_frame` in place (owner −4 marks the plane) and returns the
    (H, W) bool mask of the plane's pixels.
    """
    photo = (owner < 0) & ((owner == -3) | (points[:, :, 2] > plane_depth))
    owner[photo] = -4
    points[photo] = rays[photo] * plane_depth
    normals[photo] = np.array([0.0, 0.0, -1.0])
    cos_incidence[photo] = 1.0 / np.linalg.norm(rays[photo], axis=1)
    return photo


def render_frame(
    scene: SceneSpec,
    frame: int,
    intrinsics: np.ndarray,
    image_size: tuple[int, int],
    noise: SensorNoise,
    generator: np.random.Generator,
    shadows: bool = True,
    backdrop: Backdrop | None = None,
) -> FrameArrays:
    """Ray-cast one view of a scene, shade it and apply the sensor model.

    Args:
        scene: the scene.
        frame: index into `scene.cameras`.
        intrinsics: (3, 3) float, pixels.
        image_size: (W, H) pixels.
        noise: depth sensor model.
        generator: source of the lighting jitter, colour noise and depth noise draws.
        shadows: cast shadow rays from the objects onto the table and each other.
        backdrop: a photo composited behind the scene: shown, unshaded, on the camera-facing plane at
            depth z = (farthest object vertex) + `Backdrop.margin`, which replaces the room and hides the
            table beyond it, so depth and colour stay consistent (see `cleanpose.data.synth.backgrounds`).

    Returns:
        `FrameArrays` of the view.
    """
    width, height = image_size
    camera = scene.cameras[frame]
    rotations, translations, scales, meshes = [], [], [], []
    for placed in scene.objects:
        rotations.append(camera.rotation @ placed.rotation)
        translations.append(camera.rotation @ placed.translation + camera.translation)
        scales.append(placed.scale)
        meshes.append(instance_shape(placed.instance).mesh)

    # Table and room are boxes: intersect them in closed form (world frame, same ray parameter).
    rays = pixel_rays(intrinsics, width, height)
    # float32 is plenty for the background (sub-micrometre at 3 m) and halves the cost of these passes
    rays_world = (rays @ camera.rotation).astype(np.float32)
    origin_world = -camera.rotation.T @ camera.translation
    half = scene.table_half_size
    table = cast_box(
        rays_world, origin_world, np.array([-half, -TABLE_THICKNESS, -half]), np.array([half, 0.0, half]), inside=False
    )
    room = cast_box(rays_world, origin_world, ROOM_LOWER, ROOM_UPPER, inside=True)
    on_table = table.distance < room.distance
    background = np.where(on_table, table.distance, room.distance)
    seen = np.isfinite(background)
    axis = np.where(on_table, table.normal_axis, room.normal_axis)
    normal_world = np.zeros((height, width, 3))
    for index in range(3):  # the face normal points against the ray along the hit face's axis
        normal_world[:, :, index] = np.where(axis == index, -np.sign(rays_world[:, :, index]), 0.0)
    owner = np.where(on_table, -1, -2)
    owner[~seen] = -3
    background = np.where(seen, background, 0.0)
    points = rays * background[:, :, None]
    normals = normal_world @ camera.rotation.T
    cos_incidence = np.abs(np.einsum("hwc,hwc->hw", normals, rays)) / np.sqrt(np.einsum("hwc,hwc->hw", rays, rays))

    # Objects: Embree ray casting, only inside the projected boxes of the objects.
    vertex_blocks, face_blocks, owners = [], [], []
    offset = 0
    region = np.zeros((height, width), dtype=bool)
    for k, mesh in enumerate(meshes):
        vertices = scales[k] * mesh.vertices @ rotations[k].T + translations[k]
        region |= projected_region(vertices, intrinsics, width, height)
        vertex_blocks.append(vertices)
        face_blocks.append(mesh.faces + offset)
        owners.append(np.full(len(mesh.faces), k))
        offset += len(vertices)
    face_starts = np.cumsum([0] + [len(mesh.faces) for mesh in meshes])
    object_face = np.full((height, width), -1, dtype=np.int64)
    barycentric = np.zeros((height, width, 3))
    caster = None
    if meshes:
        face_owner = np.concatenate(owners)
        to_world = (camera.rotation.T, -camera.rotation.T @ camera.translation)
        caster = MeshCaster(np.concatenate(vertex_blocks), np.concatenate(face_blocks), world_caster(scene), to_world)
        hits = caster.first_hits(intrinsics, width, height, region)
        front = (hits.face >= 0) & (~seen | (hits.points[:, :, 2] < background))
        owner[front] = face_owner[hits.face[front]]
        object_face[front] = hits.face[front]
        points[front] = hits.points[front]
        normals[front] = hits.normals[front]
        cos_incidence[front] = hits.cos_incidence[front]
        barycentric[front] = hits.barycentric[front]
    photo = np.zeros((height, width), dtype=bool)
    if backdrop is not None:
        farthest = max((float(vertices[:, 2].max()) for vertices in vertex_blocks), default=0.5)
        photo = _place_photo_plane(farthest + backdrop.margin, rays, owner, points, normals, cos_incidence)
    object_index = np.where(owner >= 0, owner, -1).astype(np.int16)
    depth = np.where(owner != -3, points[:, :, 2], 0.0)

    nocs = np.zeros((height, width, 3))
    handle_pixels = np.zeros(len(scene.objects), dtype=np.int64)
    albedo = np.zeros((height, width, 3))
    for k, placed in enumerate(scene.objects):
        pixels = owner == k
        if not pixels.any():
            continue
        q = (points[pixels] - translations[k]) @ rotations[k] / scales[k]
        nocs[pixels] = q
        shape = instance_shape(placed.instance)
        local_face = object_face[pixels] - face_starts[k]
        if shape.colours is not None:
            albedo[pixels] = shape.colours.albedo(local_face, barycentric[pixels])
        else:
            albedo[pixels] = _pattern(placed.appearance, q[:, 0], q[:, 1], q[:, 2])
        if shape.handle_faces.any():
            handle_pixels[k] = int(shape.handle_faces[local_face].sum())
    world = origin_world.astype(np.float32) + rays_world * depth.astype(np.float32)[:, :, None]  # world frame
    table_pixels = owner == -1
    albedo[table_pixels] = _pattern(
        scene.table, world[table_pixels, 0], world[table_pixels, 2] * 0.15, world[table_pixels, 2]
    )
    room_pixels = owner == -2
    floor = room_pixels & (world[:, :, 1] < -0.7)
    albedo[floor] = _pattern(scene.floor, world[floor, 0], world[floor, 2], np.zeros(floor.sum()))
    walls = room_pixels & ~floor
    albedo[walls] = _pattern(scene.wall, world[walls, 0], world[walls, 1], world[walls, 2])

    light = camera.rotation @ scene.light_direction
    intensity = generator.uniform(0.85, 1.15)
    diffuse = np.clip(normals @ light, 0.0, None)
    if caster is not None and shadows:
        diffuse[_shadowed(caster, points, normals, diffuse, owner, light, camera, intrinsics, width, height)] = 0.0
    shade = scene.ambient + (1.0 - scene.ambient) * (0.75 * diffuse + 0.25 * cos_incidence)
    color = albedo * (intensity * shade)[:, :, None] * 255.0
    if backdrop is not None:
        color[photo] = backdrop.image[photo]
    # sensor colour noise: triangular with standard deviation 2 levels (two uniform draws, cheaper than normal)
    color += (generator.random(color.shape, dtype=np.float32) - generator.random(color.shape, dtype=np.float32)) * (
        2.0 * np.sqrt(6.0)
    )
    color = np.clip(np.rint(color), 0, 255).astype(np.uint8)
    sensor_depth = apply_sensor_noise(depth, cos_incidence, generator, noise)
    return FrameArrays(
        color=color,
        depth=depth,
        sensor_depth=sensor_depth,
        object_index=object_index,
        nocs=nocs,
        rotations=np.array(rotations).reshape(-1, 3, 3),
        translations=np.array(translations).reshape(-1, 3),
        scales=np.array(scales, dtype=np.float64),
        handle_pixels=handle_pixels,
    )
