"""The user's own meshes for `cleanpose synth --models DIR`: finding them, checking them, canonicalising them.

Three layouts of ``DIR`` are accepted:

* **category folders**: ``DIR/<category>/<instance>.<ext>`` with ``ext`` in obj, ply, glb, gltf (OBJ with
  its MTL and textures, PLY with vertex or face colours, glTF/GLB with their materials); units metres,
  axes already the NOCS ones. A ``DIR/models.yaml`` holding only ``defaults`` changes these.
* **mapping file** ``DIR/models.yaml``::

      defaults: {unit: cm}            # optional: unit, up, front, symmetric for every entry
      models:
        - file: scans/red_mug.ply     # relative to DIR
          category: mug               # one of the format's categories
          unit: mm                    # m (default), cm or mm
          up: +z                      # the file's axis that is NOCS +y (up) ...
          front: -y                   # ... and the one that is NOCS +z; or instead:
          # transform: [[1,0,0,0],[0,0,1,0],[0,-1,0,0],[0,0,0,1]]  (file → canonical; 3×3 part orthogonal)
          symmetric: true             # optional, see below
          name: red_mug               # optional instance name (default: the file name without extension)

* **the NOCS ``obj_models`` folder** (holding ``train/``, ``val/``, ``real_train/`` or ``real_test/``):
  CAMERA models ``<train|val>/<synset>/<id>/model.obj`` (z-flipped ShapeNet meshes of unit diagonal, flipped
  back; models of other synsets are distractors and are left out, with a logged count) and REAL models
  ``real_<train|test>/<category>_<name>.obj`` (metric).

Canonicalisation (the NOCS convention, docs/data_formats.md §1.5): the file's vertices are rotated into the
canonical axes, converted to metres, centred on their tight axis-aligned box and divided by its diagonal.
Canonical axes are those of `cleanpose.data.synth.shapes`: **y up**, and per category the facing of its
docstring (camera lens, laptop display, remote emitter, shoe toe, tube cap, cutlery working end at **+z**; mug,
cup and teapot handle/spout on the x axis, mug and cup handle at **+x**). To check a mesh, render it
with ``cleanpose synth --models DIR --preview``: its last column shows the NOCS coordinates as colours,
``(R, G, B) = 255·(q + 0.5)``, so the top of every object must be the greenest part, the side at +z the
bluest (the lens of a camera, the display of a laptop) and a mug's handle the reddest part. (The
``_coord.png`` files store ``B = 255·(0.5 − q_z)``, docs/data_formats.md §1.5; the preview does not.)

Symmetry: the formats label symmetry per category (NOCS bottle, bowl, can; HouseCat6D bottle, can,
glass), except NOCS mugs, whose evaluation treats a mug as symmetric in frames where its handle is not
seen. ``symmetric: true`` on a NOCS mug (a mug without handle) therefore marks its handle as never
visible; on the format's symmetric categories it is a no-op; elsewhere (and ``symmetric: false`` on a
symmetric category) the format cannot express it and the entry is refused. A mug's handle faces are
found as in SPD's mug re-centring: the body is the cylinder about the vertical axis through
``x = min x + (max z − min z)/2`` with radius ``(max z − min z)/2``; faces whose centre lies more than
5 % of that radius outside it are the handle.

Bad input (a file that does not load, has no faces or zero area, an OBJ whose MTL or texture file, or
a glTF whose external image, is missing or unreadable, a category folder without meshes) raises
`DataFormatError` naming the file; with ``skip_bad`` the file (or folder) is left out instead, logged
and counted in `MeshCatalog.skipped`. An unknown category is always an error. Meshes need not be
watertight: they are ray cast and sampled by area, both of
which take any triangle soup (through a hole one sees the inside, as a camera would).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import urllib.parse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import PIL.Image
import trimesh
import yaml

from cleanpose.data.formats import housecat6d, nocs
from cleanpose.data.synth import shapes
from cleanpose.data.synth.textures import colours_from_visual, concatenate_colours
from cleanpose.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

MESH_EXTENSIONS = (".obj", ".ply", ".glb", ".gltf")
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
"""Metres per file unit."""
MAPPING_FILE = "models.yaml"
NOCS_LAYOUT_FOLDERS = ("train", "val", "real_train", "real_test")
ENTRY_KEYS = ("file", "category", "unit", "up", "front", "transform", "symmetric", "name")
DEFAULT_KEYS = ("unit", "up", "front", "symmetric")
HANDLE_MARGIN = 1.05
"""A mug face is handle when its centre is farther than this × the body radius from the body axis."""

_SYNSET_CATEGORIES = {
    "02876657": "bottle",
    "02880940": "bowl",
    "02942699": "camera",
    "02946921": "can",
    "03642806": "laptop",
    "03797390": "mug",
}
_AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1)}


def format_categories(format: str) -> tuple[str, ...]:
    """Categories of a dataset format, in class-id order."""
    return shapes.NOCS_CATEGORIES if format == "nocs" else shapes.HOUSECAT6D_CATEGORIES


def symmetric_categories(format: str) -> frozenset[str]:
    """Categories the format's readers and evaluator treat as symmetric about y."""
    ids = nocs.SYMMETRIC_CATEGORY_IDS if format == "nocs" else housecat6d.SYMMETRIC_CATEGORY_IDS
    return frozenset(format_categories(format)[i] for i in ids)


@dataclasses.dataclass(frozen=True)
class MeshEntry:
    """One mesh file and how to bring it into the canonical NOCS frame."""

    path: str
    category: str
    name: str
    """Instance name (file-system and list-file safe)."""
    unit: float = 1.0
    """Metres per file unit."""
    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    """Row-major 3×3 orthogonal matrix, file axes → canonical axes."""
    symmetric: bool = False
    """Mesh flagged symmetric about y (meaningful for NOCS mugs: handle never visible)."""
    metric: bool = True
    """False for unit-diagonal models of unknown size (NOCS CAMERA models): scaled per placement."""
    synset: str | None = None
    """ShapeNet synset (NOCS CAMERA models)."""


@dataclasses.dataclass(frozen=True)
class MeshCatalog:
    """Every usable mesh of a ``--models`` folder, and what was skipped."""

    root: str
    format: str
    entries: tuple[MeshEntry, ...]
    skipped: tuple[str, ...] = ()
    """``"<file>: <reason>"`` of each skipped file or folder (``skip_bad``)."""

    def of_category(self, category: str) -> tuple[MeshEntry, ...]:
        return tuple(entry for entry in self.entries if entry.category == category)


class LoadedMesh(NamedTuple):
    """A canonicalised mesh: the `shapes.ShapeMesh` the renderer uses and its metric size."""

    shape: shapes.ShapeMesh
    diagonal: float
    """Tight-box diagonal in metres (unit-diagonal models of unknown size: 1)."""


# --------------------------------------------------------------------------------------------
# loading and canonicalising one mesh


def _check_obj_materials(path: Path) -> None:
    """Raise `DataFormatError` when an OBJ names an MTL file, or an MTL a diffuse map, that is missing or unreadable."""
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("mtllib"):
            continue
        library = path.parent / line.split(maxsplit=1)[1].strip()
        if not library.is_file():
            raise DataFormatError(f"{path}: material file {library} does not exist")
        for material_line in library.read_text(errors="replace").splitlines():
            words = material_line.split()
            if words and words[0] == "map_Kd" and len(words) > 1:
                # options such as "-s 1 1 1" come before the file name
                _check_image(path, library.parent / words[-1], library)


def _check_gltf_images(path: Path) -> None:
    """Raise `DataFormatError` when a .gltf names an external image file that is missing or unreadable."""
    try:
        document = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: cannot be read as a mesh (not valid glTF JSON: {error})") from None
    for image in document.get("images", []) if isinstance(document, dict) else []:
        uri = image.get("uri") if isinstance(image, dict) else None
        if uri and not uri.startswith("data:"):
            _check_image(path, path.parent / urllib.parse.unquote(uri), path)


def _check_image(path: Path, texture: Path, named_in: Path) -> None:
    if not texture.is_file():
        raise DataFormatError(f"{path}: texture {texture} named in {named_in} does not exist")
    try:
        with PIL.Image.open(texture) as image:
            image.verify()
    except Exception as error:  # PIL raises several types for broken files
        raise DataFormatError(f"{path}: texture {texture} cannot be read as an image ({error})") from None


def _rotation(entry: MeshEntry) -> np.ndarray:
    return np.asarray(entry.rotation, dtype=np.float64).reshape(3, 3)


def handle_faces(mesh: trimesh.Trimesh) -> np.ndarray:
    """(F,) bool: faces of a canonical mug/cup outside its body cylinder (see the module docstring)."""
    lower, upper = mesh.bounds
    radius = (upper[2] - lower[2]) / 2
    axis_x, axis_z = lower[0] + radius, (upper[2] + lower[2]) / 2
    centres = mesh.triangles_center
    distance = np.hypot(centres[:, 0] - axis_x, centres[:, 2] - axis_z)
    return distance > HANDLE_MARGIN * radius


def _read_parts(path: Path) -> list[trimesh.Trimesh]:
    if path.suffix.lower() == ".obj":  # trimesh drops a missing texture with a log line only
        _check_obj_materials(path)
    elif path.suffix.lower() == ".gltf":
        _check_gltf_images(path)
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
        parts = [geometry for geometry in scene.dump() if isinstance(geometry, trimesh.Trimesh)]
    except Exception as error:  # trimesh raises many types for unreadable files
        raise DataFormatError(f"{path}: cannot be read as a mesh ({type(error).__name__}: {error})") from None
    return [part for part in parts if len(part.faces)]


@functools.lru_cache(maxsize=64)
def load_mesh(entry: MeshEntry) -> LoadedMesh:
    """Read a mesh file and canonicalise it (cached per process).

    Returns:
        `LoadedMesh`: vertices in the canonical frame, tight box centred at 0 with diagonal 1; the
        colours of the file (None when it defines none); handle faces for mugs and cups.

    Raises:
        DataFormatError: the file is missing or unreadable, has no faces or no area, or misses a texture.
    """
    path = Path(entry.path)
    if not path.is_file():
        raise DataFormatError(f"{path}: mesh file does not exist")
    parts = _read_parts(path)
    if not parts:
        raise DataFormatError(f"{path}: mesh has no faces")
    offsets = np.cumsum([0] + [len(part.vertices) for part in parts])
    vertices = np.concatenate([np.asarray(part.vertices, dtype=np.float64) for part in parts])
    faces = np.concatenate([np.asarray(part.faces, dtype=np.int64) + offset for part, offset in zip(parts, offsets)])
    colours = concatenate_colours([colours_from_visual(part) for part in parts], [len(part.faces) for part in parts])
    vertices = vertices @ _rotation(entry).T * entry.unit
    if not np.isfinite(vertices).all():
        raise DataFormatError(f"{path}: mesh has non-finite vertex coordinates")
    used = vertices[np.unique(faces)]
    lower, upper = used.min(axis=0), used.max(axis=0)
    diagonal = float(np.linalg.norm(upper - lower))
    mesh = trimesh.Trimesh((vertices - (lower + upper) / 2) / max(diagonal, 1e-300), faces, process=False)
    if diagonal <= 0 or mesh.area <= 1e-12:
        raise DataFormatError(f"{path}: mesh has zero area (all its faces are degenerate)")
    if entry.category in ("mug", "cup") and not entry.symmetric:
        handle = handle_faces(mesh)
    else:
        handle = np.zeros(len(faces), dtype=bool)
    return LoadedMesh(shapes.ShapeMesh(mesh, handle, colours), diagonal if entry.metric else 1.0)


# --------------------------------------------------------------------------------------------
# finding the meshes of a folder


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _axis(value, where: str) -> np.ndarray:
    if value not in _AXES:
        raise DataFormatError(f"{where}: axis {value!r}; expected one of {', '.join(_AXES)}")
    return np.array(_AXES[value], dtype=np.float64)


def _entry_rotation(settings: dict, where: str) -> tuple[float, ...]:
    """Row-major file → canonical rotation from ``transform`` or ``up``/``front``."""
    if settings.get("transform") is not None:
        if "up" in settings or "front" in settings:
            raise DataFormatError(f"{where}: give either 'transform' or 'up'/'front', not both")
        try:
            matrix = np.asarray(settings["transform"], dtype=np.float64)
        except (TypeError, ValueError):
            matrix = np.zeros(0)
        if matrix.shape != (4, 4):
            raise DataFormatError(f"{where}: 'transform' must be a 4x4 list of numbers; got {settings['transform']!r}")
        rotation = matrix[:3, :3]
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-4:
            raise DataFormatError(f"{where}: the 3x3 part of 'transform' is not orthogonal (use 'unit' for scale)")
        return tuple(float(value) for value in rotation.ravel())
    up = _axis(settings.get("up", "+y"), where)
    front = _axis(settings.get("front", "+z"), where)
    if abs(up @ front) > 0:
        raise DataFormatError(
            f"{where}: 'up' {settings.get('up', '+y')} and 'front' {settings.get('front', '+z')} must be different axes"
        )
    # rows: the file axes that become canonical x (= y × z), y (up) and z (front)
    return tuple(float(value) for value in np.stack([np.cross(up, front), up, front]).ravel())


def _check_category(category, format: str, where: str) -> None:
    valid = format_categories(format)
    if category not in valid:
        raise DataFormatError(f"{where}: unknown {format} category {category!r}; valid categories: {', '.join(valid)}")


def _check_symmetric(symmetric, category: str, format: str, where: str) -> bool:
    if symmetric is None:
        return False
    if not isinstance(symmetric, bool):
        raise DataFormatError(f"{where}: 'symmetric' must be true or false; got {symmetric!r}")
    symmetric_set = symmetric_categories(format)
    if symmetric == (category in symmetric_set) or (symmetric and format == "nocs" and category == "mug"):
        return symmetric
    raise DataFormatError(
        f"{where}: symmetric: {str(symmetric).lower()} cannot be labelled for a {format} {category}: the format treats "
        f"{', '.join(sorted(symmetric_set))} as symmetric and everything else as not"
        + (" (a NOCS mug may be flagged symmetric: its handle is then never visible)" if format == "nocs" else "")
    )


def _make_entry(path: Path, settings: dict, format: str, where: str) -> MeshEntry:
    category = settings.get("category")
    _check_category(category, format, where)
    unit = settings.get("unit", "m")
    if unit not in UNITS:
        raise DataFormatError(f"{where}: unit {unit!r}; expected one of {', '.join(UNITS)}")
    symmetric = _check_symmetric(settings.get("symmetric"), category, format, where)
    name = _safe_name(str(settings.get("name") or path.stem))
    return MeshEntry(str(path), category, name, UNITS[unit], _entry_rotation(settings, where), symmetric)


def _check_keys(mapping, valid: tuple[str, ...], where: str) -> dict:
    if not isinstance(mapping, dict):
        raise DataFormatError(f"{where}: expected a mapping with keys {', '.join(valid)}; got {mapping!r}")
    unknown = sorted(set(mapping) - set(valid))
    if unknown:
        raise DataFormatError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(valid)}")
    return mapping


def _mapping_entries(root: Path, data: dict, format: str) -> list[tuple[Path, dict, str]]:
    where = root / MAPPING_FILE
    defaults = _check_keys(data.get("defaults") or {}, DEFAULT_KEYS, f"{where}: defaults")
    if "models" not in data:
        return [
            (path, settings if settings is None else {**defaults, **settings}, source)
            for path, settings, source in _folder_entries(root, format)
        ]
    if not isinstance(data["models"], list):
        raise DataFormatError(f"{where}: 'models' must be a list of entries")
    found = []
    for index, item in enumerate(data["models"]):
        place = f"{where}: models[{index}]"
        _check_keys(item, ENTRY_KEYS, place)
        if "file" not in item or "category" not in item:
            raise DataFormatError(f"{place}: 'file' and 'category' are required")
        found.append((root / str(item["file"]), {**defaults, **item}, place))
    return found


def _folder_entries(root: Path, format: str) -> list[tuple[Path, dict, str]]:
    """(file, settings, where) of ``root/<category>/<instance>.<ext>``; an empty category folder: (folder, None)."""
    found = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        _check_category(folder.name, format, str(folder))
        files = sorted(path for path in folder.iterdir() if path.suffix.lower() in MESH_EXTENSIONS and path.is_file())
        if not files:
            found.append((folder, None, f"{folder}: category folder holds no mesh ({', '.join(MESH_EXTENSIONS)})"))
        found.extend((path, {"category": folder.name}, str(path)) for path in files)
    return found


def _nocs_layout_entries(root: Path, format: str) -> list[MeshEntry]:
    entries, distractors = [], 0
    for split in ("train", "val"):
        for model in sorted((root / split).glob("*/*/model.obj")):
            synset = model.parent.parent.name
            if synset not in _SYNSET_CATEGORIES:
                distractors += 1
                continue
            category = _SYNSET_CATEGORIES[synset]
            _check_category(category, format, str(model))
            entries.append(
                MeshEntry(
                    str(model),
                    category,
                    _safe_name(model.parent.name),
                    rotation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
                    metric=False,
                    synset=synset,
                )
            )
    for split in ("real_train", "real_test"):
        for model in sorted((root / split).glob("*.obj")):
            category = model.stem.split("_")[0]
            _check_category(category, format, str(model))
            entries.append(MeshEntry(str(model), category, _safe_name(model.stem)))
    if distractors:
        logger.info("%s: left out %d CAMERA models of non-NOCS synsets (distractors)", root, distractors)
    return entries


def _unique_names(entries: list[MeshEntry]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for entry in entries:
        key = (entry.category, entry.name)
        if key in seen:
            raise DataFormatError(
                f"{entry.path}: instance name {entry.name!r} of category {entry.category} is also "
                f"used by {seen[key]}; rename one file (or set 'name' in {MAPPING_FILE})"
            )
        seen[key] = entry.path


def scan_models(models_dir, format: str, skip_bad: bool = False) -> MeshCatalog:
    """Find, check and load every mesh of a ``--models`` folder (see the module docstring).

    Args:
        models_dir: the folder.
        format: "nocs" or "housecat6d" (its categories are the valid ones).
        skip_bad: leave out (and log, and count) bad files instead of raising.

    Returns:
        `MeshCatalog` whose entries all loaded.

    Raises:
        ConfigError: the folder does not exist or yields no usable mesh.
        DataFormatError: a bad mapping file, an unknown category, or (without `skip_bad`) a bad mesh.
    """
    if format not in ("nocs", "housecat6d"):
        raise ConfigError(f"unknown format {format!r}; expected one of: nocs, housecat6d")
    root = Path(models_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: --models folder does not exist")
    if (root / MAPPING_FILE).is_file() or not any((root / name).is_dir() for name in NOCS_LAYOUT_FOLDERS):
        if (root / MAPPING_FILE).is_file():
            try:
                data = yaml.safe_load((root / MAPPING_FILE).read_text()) or {}
            except yaml.YAMLError as error:
                raise DataFormatError(f"{root / MAPPING_FILE}: not valid YAML ({error})") from None
            candidates = _mapping_entries(
                root, _check_keys(data, ("defaults", "models"), str(root / MAPPING_FILE)), format
            )
        else:
            candidates = _folder_entries(root, format)
        entries = [
            None if settings is None else _make_entry(path, settings, format, where)
            for path, settings, where in candidates
        ]
        problems = [where if settings is None else None for _, settings, where in candidates]
    else:
        entries = _nocs_layout_entries(root, format)
        problems = [None] * len(entries)
    _unique_names([entry for entry in entries if entry is not None])
    usable, skipped = [], []
    for entry, problem in zip(entries, problems):
        try:
            if problem is not None:  # an empty category folder
                raise DataFormatError(problem)
            load_mesh(entry)
        except DataFormatError as error:
            if not skip_bad:
                raise
            skipped.append(str(error))
            logger.warning("skipped: %s", error)
            continue
        usable.append(entry)
    if skipped:
        logger.warning("%s: skipped %d bad mesh file(s) or folder(s)", root, len(skipped))
    if not usable:
        raise ConfigError(
            f"{root}: no usable mesh found (expected {MAPPING_FILE}, <category>/<instance>"
            f"{{{','.join(MESH_EXTENSIONS)}}} or a NOCS obj_models folder)"
        )
    return MeshCatalog(str(root), format, tuple(usable), tuple(skipped))
