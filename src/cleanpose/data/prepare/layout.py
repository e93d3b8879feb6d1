"""Where the NOCS downloads are, where the prepared files go, and the list files of each split.

Raw root (``--raw``), as the downloads unpack (either spelling of each folder is accepted)::

    CAMERA|camera/{train,val}/<FFFFF>/<IIII>_{color,coord,depth,mask}.png, _meta.txt
    camera_full_depths|camera_composed_depth/{train,val}/<FFFFF>/<IIII>_composed.png
    Real|real/{train,test}/scene_<k>/<IIII>_...
    obj_models/{train,val}/<synset>/<id>/model.obj, bbox.txt; obj_models/real_{train,test}/<name>.obj, .txt
    gts/{val,real_test}/results_*.pkl           (optional)
    results/nocs_results/{val,real_test}/ or segmentation_results/{CAMERA25,REAL275}/   (optional)

Prepared root (``--out``): the layout of `docs/data_formats.md` §2.1, lower-case ``camera``/``real``.
Frame files are hard links to the raw files (symbolic links where the two roots are on different
file systems), so preparing costs no copy of the images.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from cleanpose.errors import DataFormatError

SPLITS = {
    "camera_train": ("camera", "train"),
    "camera_val": ("camera", "val"),
    "real_train": ("real", "train"),
    "real_test": ("real", "test"),
}
"""Split name → (source, subset)."""

RAW_NAMES = {
    "camera": ("camera", "CAMERA"),
    "real": ("real", "Real", "REAL"),
    "composed": ("camera_full_depths", "camera_composed_depth", "camera_composed_depths"),
    "obj_models": ("obj_models",),
    "gts": ("gts",),
}
"""Accepted spellings of the raw top-level folders."""

FRAMES_PER_CAMERA_FOLDER = 10


@dataclass(frozen=True)
class RawLayout:
    """Resolved raw folders (None where absent)."""

    camera: Path | None
    real: Path | None
    composed: Path | None
    obj_models: Path | None
    gts: Path | None
    root: Path

    @classmethod
    def find(cls, root: str | os.PathLike) -> RawLayout:
        """Look up the raw folders under `root`.

        Raises:
            DataFormatError: `root` is not a folder.
        """
        root = Path(root)
        if not root.is_dir():
            raise DataFormatError(f"{root}: raw NOCS folder not found")
        found = {}
        for key, names in RAW_NAMES.items():
            found[key] = next((root / name for name in names if (root / name).is_dir()), None)
        return cls(root=root, **found)

    def subset_dir(self, split: str) -> Path:
        """Raw folder of a split, e.g. ``<raw>/CAMERA/train``.

        Raises:
            DataFormatError: the folder is missing (named with every accepted spelling).
        """
        source, subset = SPLITS[split]
        top = getattr(self, source)
        if top is None or not (top / subset).is_dir():
            spellings = " or ".join(f"{self.root}/{name}/{subset}" for name in RAW_NAMES[source])
            raise DataFormatError(f"split {split}: raw folder missing; expected {spellings}")
        return top / subset

    def require_models(self) -> Path:
        """``<raw>/obj_models``.

        Raises:
            DataFormatError: missing.
        """
        if self.obj_models is None:
            raise DataFormatError(f"{self.root}/obj_models: folder missing (the NOCS obj_models download)")
        return self.obj_models


def list_entries(raw_subset_dir: Path, split: str) -> list[str]:
    """``*_list_all.txt`` entries of a split, as the reference list builder makes them.

    CAMERA: 10 entries per folder, folder ids 0 … n−1 as ``%05d`` whatever the folder names are
    (so missing frames are listed too); REAL: sorted scene folders, then the sorted ``*_color.png``
    names, prefix = text before the first ``_``.
    """
    source, subset = SPLITS[split]
    folders = [entry.name for entry in os.scandir(raw_subset_dir) if entry.is_dir()]
    if source == "camera":
        return [
            f"{subset}/{i // FRAMES_PER_CAMERA_FOLDER:05d}/{i % FRAMES_PER_CAMERA_FOLDER:04d}"
            for i in range(FRAMES_PER_CAMERA_FOLDER * len(folders))
        ]
    entries = []
    for folder in sorted(folders):
        for path in sorted(glob.glob(os.path.join(raw_subset_dir, glob.escape(folder), "*_color.png"))):
            entries.append(f"{subset}/{folder}/{os.path.basename(path).split('_')[0]}")
    return entries


def place_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make `target` name the file `source`: a hard link, or a symbolic link across file systems.

    Atomic: the link is made under a temporary name and renamed onto `target`. Nothing happens when
    `target` already is `source`.

    Raises:
        OSError: `source` is missing or the link cannot be made.
    """
    source, target = os.fspath(source), os.fspath(target)
    if os.path.lexists(target):
        with contextlib.suppress(OSError):
            if os.path.samefile(source, target):
                return
    temporary = f"{target}.{os.getpid()}.link"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    try:
        os.link(source, temporary)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        if not os.path.exists(source):  # never leave a dangling link
            raise FileNotFoundError(errno.ENOENT, "no such file to link", source) from None
        os.symlink(os.path.abspath(source), temporary)
    os.replace(temporary, target)


def place_tree(source: Path, target: Path) -> int:
    """`place_file` every file below `source` at the same relative path below `target`; returns the count."""
    count = 0
    for folder, _, files in os.walk(source):
        destination = target / Path(folder).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            place_file(Path(folder) / name, destination / name)
            count += 1
    return count
