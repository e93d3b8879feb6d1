"""Pairs of augmented views of synthetic shape instances: the data of teacher pretraining.

Sample ``i`` draws, from ``numpy.random.default_rng([seed, i])`` only: a category (uniform over the
category set), an instance (fresh unit shape parameters from the training range of
:mod:`cleanpose.data.synth.shapes`, never the held-out band; or one of ``instances_per_category``
instances drawn once per category), a metric size (tight-box diagonal, uniform in the synth world's range
of the category) and two views. Each view is an independent uniform surface sample of the mesh, rotated by
a uniform random rotation, scaled by the diagonal times U(0.8, 1.2), jittered (clipped Gaussian, σ 1 mm)
and centred on its mean: metric, centred, camera-frame-like clouds like those the teacher sees during
distillation (complete surfaces, not partial views). Because every draw is keyed by (seed, index), the
number of loader workers does not change the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation
from torch.utils.data import Dataset

from cleanpose.data.augment import point_noise
from cleanpose.data.synth import shapes
from cleanpose.data.synth.scene import DIAGONAL_RANGES, instance_mesh
from cleanpose.errors import ConfigError

__all__ = ["CATEGORY_SETS", "SCALE_JITTER", "ShapePairDataset", "shape_categories"]

CATEGORY_SETS = ("nocs", "housecat6d")
"""Names of the category sets, for :func:`shape_categories`."""
SCALE_JITTER = (0.8, 1.2)
"""Range of the uniform factor applied to the instance's diagonal in each view."""


def shape_categories(category_set: str) -> tuple[str, ...]:
    """The category names of a set of :data:`CATEGORY_SETS`; the label of a category is its index.

    Raises:
        ConfigError: unknown set (the message lists the known ones).
    """
    if category_set not in CATEGORY_SETS:
        raise ConfigError(f"format is {category_set!r}; valid formats: {', '.join(CATEGORY_SETS)}")
    return {"nocs": shapes.NOCS_CATEGORIES, "housecat6d": shapes.HOUSECAT6D_CATEGORIES}[category_set]


def augmented_view(
    mesh: trimesh.Trimesh, diagonal: float, num_points: int, generator: np.random.Generator
) -> np.ndarray:
    """One view of a unit-diagonal mesh: surface sample, random rotation and metric scale, jitter, centred.

    Args:
        mesh: the instance, tight-box diagonal 1.
        diagonal: the instance's metric diagonal, metres.
        num_points: N.
        generator: draws the surface sample, the rotation, the scale factor and the jitter, in that order.

    Returns:
        (N, 3) float32, metres, centred on the mean.
    """
    surface, _ = trimesh.sample.sample_surface(mesh, num_points, seed=generator)
    rotation = Rotation.random(random_state=generator).as_matrix()
    scale = diagonal * generator.uniform(*SCALE_JITTER)
    cloud = scale * surface @ rotation.T + point_noise(num_points, generator)
    return (cloud - cloud.mean(axis=0)).astype(np.float32)


class ShapePairDataset(Dataset):
    """Two augmented views of a random synthetic instance per index (module docstring).

    Args:
        categories: category names; the label is the index in this tuple.
        num_samples: length of the dataset (steps × batch size).
        num_points: N, points per view.
        seed: keys every draw together with the index.
        instances_per_category: None draws fresh shape parameters for every sample; a number draws that
            many instances per category once (from ``[seed, 1, category index, instance index]``) and
            samples pick among them.
    """

    def __init__(
        self,
        categories: Sequence[str],
        num_samples: int,
        num_points: int,
        seed: int,
        instances_per_category: int | None = None,
    ):
        self.categories = tuple(categories)
        self.num_samples = num_samples
        self.num_points = num_points
        self.seed = seed
        self.pools = None
        if instances_per_category is not None:
            self.pools = [
                [
                    shapes.sample_unit_parameters(category, np.random.default_rng([seed, 1, label, index]), novel=False)
                    for index in range(instances_per_category)
                ]
                for label, category in enumerate(self.categories)
            ]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Returns ``views`` (2, N, 3) float32 metres and ``label`` () int64 category index."""
        generator = np.random.default_rng([self.seed, index])
        label = int(generator.integers(len(self.categories)))
        category = self.categories[label]
        if self.pools is None:
            unit = shapes.sample_unit_parameters(category, generator, novel=False)
        else:
            unit = self.pools[label][int(generator.integers(len(self.pools[label])))]
        mesh = instance_mesh(category, tuple(float(value) for value in unit)).mesh  # cached: pools repeat
        diagonal = float(generator.uniform(*DIAGONAL_RANGES[category]))
        views = np.stack([augmented_view(mesh, diagonal, self.num_points, generator) for _ in range(2)])
        return {"views": torch.from_numpy(views), "label": torch.tensor(label, dtype=torch.int64)}
