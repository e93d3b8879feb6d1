"""Per-image result dicts in one ``.npz`` file, read without ``pickle`` (docs/metrics.md §1).

Pickles run code when loaded; this format does not (``np.load(allow_pickle=False)``). It holds the same
fields as the reference's result pickles. Layout of the archive, for N images:

- ``__format__``: the string ``cleanpose-results-v1``; ``__names__``: (N,) str, one name per image (the
  result file it came from, relative to the result folder, e.g. ``test_scene1/000000.pkl``).
- per-instance keys (array values, e.g. ``pred_RTs`` (m, 4, 4)): ``KEY`` = the images' arrays concatenated
  along the first axis, ``KEY#lengths`` = (N,) int64 rows per image.
- per-image keys (scalar values, e.g. ``image_path``): ``KEY#scalar`` = (N,) values.
- a key missing from some images: ``KEY#present`` = (N,) bool.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cleanpose.errors import ConfigError, DataFormatError
from cleanpose.fileio import atomic_writer
from cleanpose.metrics.results_io import LoadedResults, load_results

__all__ = ["RESULTS_FORMAT", "convert_results", "load_results_npz", "save_results_npz"]

RESULTS_FORMAT = "cleanpose-results-v1"
"""Value of ``__format__`` in a results archive."""


def _instance_block(key: str, values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(concatenated, lengths)`` of one per-instance key; empty arrays take the others' trailing shape."""
    filled = [value for value in values if value.size]
    trailing = {value.shape[1:] for value in filled}
    if len(trailing) > 1:
        raise DataFormatError(f"key {key!r}: arrays of different trailing shapes {sorted(trailing)} cannot be stored")
    inner = trailing.pop() if trailing else values[0].shape[1:]
    dtype = np.result_type(*filled) if filled else values[0].dtype
    lengths = np.array([len(value) for value in values], dtype=np.int64)
    concatenated = (
        np.concatenate([value.reshape(len(value), *inner).astype(dtype) for value in values])
        if values
        else np.zeros((0, *inner), dtype)
    )
    return concatenated, lengths


def save_results_npz(results: Sequence[dict], path: str | Path, names: Sequence[str] | None = None) -> Path:
    """Write result dicts to ``path`` (a ``.npz`` archive; see the module docstring).

    Args:
        results: one dict per image; values are arrays (first axis = instances) or scalars (numbers, str).
        path: file to write (atomically).
        names: per image, a name (default ``results[i]``).
    Returns:
        ``path`` as a Path.
    Raises:
        DataFormatError: a value that is neither a numeric/str array nor a scalar, or arrays of one key
            whose trailing shapes differ between images.
    """
    path = Path(path)
    names = [f"results[{index}]" for index in range(len(results))] if names is None else list(names)
    if len(names) != len(results):
        raise ValueError(f"names has {len(names)} entries for {len(results)} results")
    archive = {"__format__": np.array(RESULTS_FORMAT), "__names__": np.array(names, dtype=str)}
    for key in sorted({key for result in results for key in result}):
        if "#" in key or key.startswith("__"):
            raise DataFormatError(f"key {key!r}: names with '#' or a leading '__' cannot be stored")
        present = np.array([key in result for result in results])
        values = [np.asarray(result[key]) for result in results if key in result]
        if any(value.dtype.kind not in "biufU" for value in values):
            raise DataFormatError(f"key {key!r}: only numeric or str arrays can be stored (no objects)")
        if all(value.ndim == 0 for value in values):
            archive[f"{key}#scalar"] = np.array([value[()] for value in values])
        elif any(value.ndim == 0 for value in values):
            raise DataFormatError(f"key {key!r}: a scalar in some images, an array in others")
        else:
            archive[key], archive[f"{key}#lengths"] = _instance_block(key, values)
        if not present.all():
            archive[f"{key}#present"] = present
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        np.savez(handle, **archive)
    return path


def load_results_npz(path: str | Path) -> LoadedResults:
    """Read a results archive written by ``save_results_npz`` (no pickle is loaded).

    Returns:
        ``LoadedResults``: the dicts (arrays as stored, scalars as Python values) and, as origins,
        ``path[name]`` per image.
    Raises:
        DataFormatError: not such an archive, or an inconsistent one (the message names the file).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            members = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataFormatError(f"{path}: cannot read the results archive ({type(error).__name__}: {error})") from None
    if "__format__" not in members or str(members["__format__"]) != RESULTS_FORMAT:
        raise DataFormatError(f"{path}: not a cleanpose results archive (no __format__ = {RESULTS_FORMAT!r})")
    names = [str(name) for name in members.pop("__names__")]
    members.pop("__format__")
    results: list[dict] = [{} for _ in names]
    for member, values in members.items():
        key, _, role = member.partition("#")
        if role not in ("", "scalar"):
            continue
        present = members.get(f"{key}#present", np.ones(len(names), dtype=bool))
        images = np.flatnonzero(present)
        if role == "scalar":
            if len(values) != len(images):
                raise DataFormatError(f"{path}: key {key!r} has {len(values)} values for {len(images)} images")
            for image, value in zip(images, values):
                results[image][key] = value.item()
            continue
        lengths = members.get(f"{key}#lengths")
        if lengths is None or len(lengths) != len(images) or int(lengths.sum()) != len(values):
            raise DataFormatError(f"{path}: key {key!r} has no lengths matching its {len(values)} rows")
        starts = np.cumsum(lengths) - lengths
        for image, start, length in zip(images, starts, lengths):
            results[image][key] = values[start : start + length].copy()
    return LoadedResults(results, [f"{path}[{name}]" for name in names])


def convert_results(source: str | Path, target: str | Path, dataset: str = "nocs") -> int:
    """Convert a result set between the reference's pickles and a results archive.

    ``source``: a ``.npz`` archive, or pickles as ``load_results`` reads them (a folder or one file).
    ``target``: ``*.npz`` (from pickles), ``*.pkl`` (one pickle holding the list of dicts), or a folder
    (one pickle per image, at ``target/<name>``: the layout the reference's evaluation reads).

    Returns:
        The number of images converted.
    Raises:
        ConfigError: a conversion that does not change the format, or names that are not relative ``.pkl``
            paths when writing a folder.
    """
    source, target = Path(source), Path(target)
    if source.suffix == ".npz":
        if target.suffix == ".npz":
            raise ConfigError(f"{source} is an archive already; name a .pkl file or a folder as the target")
        loaded = load_results_npz(source)
        prefix = len(str(source)) + 1
        names = [origin[prefix:-1] for origin in loaded.origins]
        if target.suffix == ".pkl":
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(target) as handle:
                pickle.dump(loaded.results, handle, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            _write_pickle_folder(loaded.results, names, target, source)
        return len(loaded.results)
    if target.suffix != ".npz":
        raise ConfigError(f"{source} holds pickles; the target must be a .npz file (got {target})")
    loaded = load_results(source, dataset)
    folder = source if source.is_dir() else source.parent
    save_results_npz(loaded.results, target, [_relative_origin(origin, folder) for origin in loaded.origins])
    return len(loaded.results)


def _relative_origin(origin: str, folder: Path) -> str:
    """``folder/a/b.pkl`` → ``a/b.pkl``; ``folder/list.pkl[3]`` → ``list.pkl[3]``."""
    file, bracket, index = origin.partition("[")
    return str(Path(file).relative_to(folder)) + bracket + index


def _write_pickle_folder(results: list[dict], names: list[str], folder: Path, source: Path) -> None:
    for name in names:
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".pkl":
            raise ConfigError(
                f"{source}: image name {name!r} is not a relative .pkl path; convert to one .pkl "
                "file instead of a folder"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: image names repeat; convert to one .pkl file instead of a folder")
    for result, name in zip(results, names):
        file = folder / name
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(file) as handle:
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
