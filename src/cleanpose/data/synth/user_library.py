"""Instance libraries made of the user's meshes (`mesh_library`), optionally mixed with procedural shapes.

Per category, a seeded ``test_fraction`` of the meshes is held out: those instances appear only in the
test splits (NOCS camera_val and real_test, HouseCat6D test), the others only in the training splits
(with ``test_fraction = 0`` every mesh is in every split). ``procedural_fraction`` p adds procedural
instances so that they make up about p of each category's instances, hence of its placed objects
(scenes draw a category, then an instance); categories without any user mesh get the usual number of
procedural instances when p > 0 and are absent when p = 0.

Instance names: NOCS CAMERA ``<category>_<name>`` (a NOCS CAMERA model keeps its id), NOCS REAL
``<category>_<name>_norm``, HouseCat6D ``<category>-<name>``. Sizes: meshes with a unit are rendered at
their true size; unit-diagonal models of unknown size get a size from the category's usual range
(per placement in CAMERA, fixed per instance in the metric splits).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy.spatial import cKDTree

from cleanpose.data.synth import writer_nocs
from cleanpose.data.synth.mesh_library import MeshCatalog, MeshEntry, format_categories, load_mesh, scan_models
from cleanpose.data.synth.scene import DIAGONAL_RANGES, NOCS_SYNSETS, SPLIT_CODES, Instance, build_library
from cleanpose.errors import ConfigError

logger = logging.getLogger(__name__)

TEST_SPLITS = ("camera_val", "real_test", "test")
"""Splits that hold the held-out meshes."""


@dataclasses.dataclass(frozen=True)
class MeshSettings:
    """What ``synth --models`` renders: the meshes and how they are split and mixed."""

    catalog: MeshCatalog
    test_fraction: float = 0.25
    """Fraction of each category's meshes held out for the test splits (rounded, at least one)."""
    procedural_fraction: float = 0.0
    """Share of procedural instances per category, in [0, 1)."""


def mesh_settings(
    models_dir, format: str, test_fraction: float = 0.25, procedural_fraction: float = 0.0, skip_bad: bool = False
) -> MeshSettings:
    """Scan a ``--models`` folder (`mesh_library.scan_models`) and check the split/mix fractions.

    Raises:
        ConfigError: a fraction outside [0, 1), or the folder errors of `scan_models`.
        DataFormatError: bad meshes or mapping entries (see `scan_models`).
    """
    for name, value in (("test_fraction", test_fraction), ("procedural_fraction", procedural_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1); got {value!r}")
    catalog = scan_models(models_dir, format, skip_bad)
    return MeshSettings(catalog, float(test_fraction), float(procedural_fraction))


def split_entries(
    entries: tuple[MeshEntry, ...], category_index: int, seed: int, test_fraction: float, test: bool
) -> tuple[MeshEntry, ...]:
    """The meshes of one category that a training (``test=False``) or test split uses.

    Raises:
        ConfigError: a category with a single mesh while `test_fraction` > 0.
    """
    if test_fraction == 0.0 or not entries:
        return entries
    if len(entries) < 2:
        raise ConfigError(
            f"category {entries[0].category} has a single mesh ({entries[0].path}); it cannot be held "
            "out for test and used for training: add meshes or pass --test-fraction 0"
        )
    held = min(max(round(test_fraction * len(entries)), 1), len(entries) - 1)
    order = np.random.default_rng([seed, 11, category_index]).permutation(len(entries))
    chosen = sorted(order[:held]) if test else sorted(order[held:])
    return tuple(entries[i] for i in chosen)


def instance_name(entry: MeshEntry, format: str, split: str) -> str:
    """Model name of an imported mesh in a split (see the module docstring)."""
    if format == "housecat6d":
        return f"{entry.category}-{entry.name}"
    if split.startswith("camera"):
        return entry.name if entry.synset else f"{entry.category}_{entry.name}"
    if entry.name.startswith(f"{entry.category}_") and entry.name.endswith("_norm"):
        return entry.name
    return f"{entry.category}_{entry.name}_norm"


def _user_instance(entry: MeshEntry, format: str, split: str, seed: int, class_index: int, index: int) -> Instance:
    camera = format == "nocs" and split.startswith("camera")
    diagonal = load_mesh(entry).diagonal if entry.metric else None
    if diagonal is None and not camera:  # a fixed size for a metric split
        generator = np.random.default_rng([seed, SPLIT_CODES[split], 12, class_index, index])
        diagonal = float(generator.uniform(*DIAGONAL_RANGES[entry.category]))
    synset = (entry.synset or NOCS_SYNSETS[entry.category]) if camera else None
    return Instance(
        instance_name(entry, format, split),
        entry.category,
        class_index + 1,
        (),
        split in TEST_SPLITS,
        synset,
        diagonal,
        entry,
    )


def build_mixed_library(
    format: str, split: str, seed: int, per_category: int, settings: MeshSettings
) -> list[Instance]:
    """The object models of one split: the split's share of the user's meshes plus procedural instances.

    Args:
        format: "nocs" or "housecat6d".
        split: a key of `SPLIT_CODES` of that format.
        seed: dataset seed.
        per_category: procedural instances of a category without user meshes (when procedural_fraction > 0).
        settings: the meshes and fractions.

    Returns:
        Instances ordered by category (user meshes first, then procedural ones).

    Raises:
        ConfigError: no instance at all, a category that cannot be split, or two instances with one name.
    """
    categories = format_categories(format)
    test = split in TEST_SPLITS
    chosen, procedural_counts = [], []
    for class_index, category in enumerate(categories):
        entries = split_entries(settings.catalog.of_category(category), class_index, seed, settings.test_fraction, test)
        chosen.append(entries)
        share = settings.procedural_fraction
        count = round(len(entries) * share / (1.0 - share)) if entries else (per_category if share > 0 else 0)
        procedural_counts.append(count)
    procedural = build_library(format, split, seed, max(procedural_counts)) if max(procedural_counts) else []
    library = []
    for class_index, category in enumerate(categories):
        library += [
            _user_instance(entry, format, split, seed, class_index, index)
            for index, entry in enumerate(chosen[class_index])
        ]
        of_category = [instance for instance in procedural if instance.category == category]
        library += of_category[: procedural_counts[class_index]]
    names = [instance.name for instance in library]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"split {split}: several instances are named {', '.join(duplicated)}; rename the meshes")
    if not library:
        raise ConfigError(f"split {split}: no instance (no mesh left for it and procedural_fraction = 0)")
    return library


def chamfer_medoid(clouds: list[np.ndarray]) -> int:
    """Index of the point cloud with the smallest summed symmetric Chamfer distance to the others.

    Args:
        clouds: list of (N, 3) float arrays.

    Returns:
        int index (the first one on ties).
    """
    trees = [cKDTree(cloud) for cloud in clouds]
    totals = np.zeros(len(clouds))
    for i in range(len(clouds)):
        for j in range(i + 1, len(clouds)):
            distance = trees[j].query(clouds[i])[0].mean() + trees[i].query(clouds[j])[0].mean()
            totals[i] += distance
            totals[j] += distance
    return int(np.argmin(totals))


def mixed_mean_shapes(libraries: list[list[Instance]], seed: int) -> np.ndarray:
    """``mean_shapes.npy`` for libraries with imported meshes, (6, 1024, 3) float64 in class-id order.

    A category with imported training meshes gets the point model (`writer_nocs.model_points`, mug fix
    applied) of its Chamfer medoid among all its training instances: imported meshes have no shared
    parameter space to average in. A category of procedural instances only keeps the procedural prior
    (`writer_nocs.mean_shapes`); one with no training instance gets the prior of the default procedural
    family of the split, so that the file always has every category.
    """
    instances = [instance for library in libraries for instance in library]
    fallback = build_library("nocs", "camera_train", seed, 1)
    procedural = [instance for instance in instances if instance.source is None]
    procedural += [instance for instance in fallback if not any(i.category == instance.category for i in procedural)]
    priors = writer_nocs.mean_shapes([procedural], seed)
    for row, category in enumerate(format_categories("nocs")):
        if not any(instance.source is not None and instance.category == category for instance in instances):
            continue
        unique: dict = {}
        for instance in instances:  # an imported mesh in CAMERA and REAL training counts once
            if instance.category == category:
                unique.setdefault((instance.source, instance.unit), instance)
        members = list(unique.values())
        clouds = [writer_nocs.model_points(instance, seed) for instance in members]
        points = clouds[chamfer_medoid(clouds)]
        priors[row] = writer_nocs.mug_fix(points)[0] if category == "mug" else points
    return priors
