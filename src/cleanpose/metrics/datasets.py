"""Per-dataset constants of the official metrics: class tables and symmetry lists (docs/metrics.md §2, §9)."""

from __future__ import annotations

from dataclasses import dataclass

from cleanpose.errors import ConfigError

__all__ = ["DATASETS", "DatasetSpec", "get_dataset"]


@dataclass(frozen=True)
class DatasetSpec:
    """What the official metric code of one dataset treats differently."""

    name: str
    """Dataset key: ``"nocs"`` or ``"housecat6d"``."""
    class_names: tuple[str, ...]
    """Class names in id order; class id ``k`` (1-based) is ``class_names[k - 1]``."""
    iou_symmetric: frozenset[str]
    """Classes whose official IoU takes the 20-step search about the object y axis (§4.3)."""
    rotation_symmetric: frozenset[str]
    """Classes whose rotation error compares y axes only (§5)."""
    axis_aligned_symmetric: frozenset[str]
    """Classes whose axis-aligned IoU takes the 20-step search (§4.4)."""
    handle_class: str | None
    """Class that is also symmetric, in the official IoU and the rotation error, whenever the gt's
    handle visibility is 0 (NOCS mug); ``None`` where handle visibility is forced to 1."""

    @property
    def num_classes(self) -> int:
        """K, the number of classes (the mean is over K rows)."""
        return len(self.class_names)


DATASETS: dict[str, DatasetSpec] = {
    "nocs": DatasetSpec(
        name="nocs",
        class_names=("bottle", "bowl", "camera", "can", "laptop", "mug"),
        iou_symmetric=frozenset({"bottle", "bowl", "can"}),
        rotation_symmetric=frozenset({"bottle", "bowl", "can"}),
        axis_aligned_symmetric=frozenset({"bottle", "bowl", "can"}),
        handle_class="mug",
    ),
    "housecat6d": DatasetSpec(
        name="housecat6d",
        class_names=("box", "bottle", "can", "cup", "remote", "teapot", "cutlery", "glass", "shoe", "tube"),
        iou_symmetric=frozenset({"bottle", "can", "glass"}),
        rotation_symmetric=frozenset({"bottle", "can", "glass"}),
        axis_aligned_symmetric=frozenset({"bottle", "can", "glass"}),
        handle_class=None,
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    """The constants of dataset ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}") from None
