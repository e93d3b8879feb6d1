"""Several evaluated runs side by side: seed groups (mean ± std) and bootstrap intervals over images.

A run is a test folder (``metrics.json``, optionally ``results.npz`` and ``config.yaml`` as ``cleanpose
test`` writes them) or a ``metrics.json`` file. Runs whose ``config.yaml`` differ only in ``run.seed`` (and
``run.out_dir``, where the run was written) form one group: its row is the mean over the seeds, with the
sample standard deviation and n. With ``bootstrap = B``, B resamples of the test images (with replacement,
the same resample for every run) are evaluated (each run is matched once; a resample re-pools the per-image
matches, exactly what evaluating the resampled result list gives); a group's value on a resample is its
seeds' mean there, and the 95 % intervals are percentiles over the resamples, for each group and for each group's
difference to the first group. Runs must have been evaluated on the same images: the ground truth of
every image, in order, must agree (``results.npz``), or at least the gt count of ``metrics.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml

from cleanpose.errors import ConfigError, DataFormatError
from cleanpose.metrics.datasets import get_dataset
from cleanpose.metrics.evaluate import HEADLINE_IOU_KEYS, HEADLINE_POSE_KEYS, average_precisions, match_arrays
from cleanpose.metrics.results_io import collect_results
from cleanpose.metrics.results_npz import load_results_npz

__all__ = ["COLUMNS", "Comparison", "RunGroup", "compare_runs", "format_comparison_markdown", "write_comparison"]

COLUMNS = (*HEADLINE_IOU_KEYS, *HEADLINE_POSE_KEYS, *(f"aa_{key}" for key in HEADLINE_IOU_KEYS))
"""Compared values: the mean AP × 100 of each headline key (``aa_``: axis-aligned IoU)."""
IGNORED_CONFIG_KEYS = (("run", "seed"), ("run", "out_dir"))
"""Config entries that may differ inside a seed group."""


@dataclass(frozen=True)
class _Run:
    name: str
    document: dict
    config: dict | None
    archive: Path | None


@dataclass(frozen=True)
class RunGroup:
    """Runs of one config that differ only in their seed (a single run is a group of one)."""

    label: str
    """Name of the group's first run (``+ n seeds`` in tables when n > 1)."""
    runs: tuple[str, ...]
    """Names of the runs (the fewest trailing parts of their paths that differ between runs)."""
    values: np.ndarray
    """(n, C) float64 AP × 100 of each run and column of ``COLUMNS``; NaN where undefined."""

    @property
    def mean(self) -> np.ndarray:
        """(C,) mean over the runs."""
        return self.values.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """(C,) sample standard deviation over the runs (NaN for one run)."""
        return self.values.std(axis=0, ddof=1) if len(self.values) > 1 else np.full(self.values.shape[1], np.nan)


@dataclass(frozen=True)
class Comparison:
    """The groups in input order; with a bootstrap, its intervals."""

    dataset: str
    groups: tuple[RunGroup, ...]
    bootstrap: int
    """Number of resamples (0: none)."""
    interval: np.ndarray | None
    """(G, C, 2) 95 % percentile interval of each group's mean over the resamples."""
    difference: np.ndarray | None
    """(G, C) each group's mean minus the first group's (on the full set)."""
    difference_interval: np.ndarray | None
    """(G, C, 2) 95 % interval of that difference over the resamples (zero width for the first group)."""


def _read_run(path: str | Path) -> _Run:
    path = Path(path)
    metrics_file = path / "metrics.json" if path.is_dir() else path
    if not metrics_file.is_file():
        raise ConfigError(f"{path}: neither a test folder with metrics.json nor a metrics.json file")
    try:
        document = json.loads(metrics_file.read_text())
        _values(document)
    except (ValueError, KeyError, TypeError) as error:
        raise DataFormatError(
            f"{metrics_file}: not a cleanpose metrics.json ({type(error).__name__}: {error})"
        ) from None
    folder = metrics_file.parent
    config = None
    if (folder / "config.yaml").is_file():
        config = yaml.safe_load((folder / "config.yaml").read_text())
        for section, key in IGNORED_CONFIG_KEYS:
            if isinstance(config, dict) and isinstance(config.get(section), dict):
                config[section].pop(key, None)
    archive = folder / "results.npz"
    named = folder if path.is_dir() or path.name == "metrics.json" else path.with_suffix("")
    return _Run(
        "/".join(part for part in named.parts if part not in ("", "/")),
        document,
        config,
        archive if archive.is_file() else None,
    )


def _shortest_unique_names(runs: list[_Run]) -> list[_Run]:
    """Each run named by the fewest trailing parts of its path that tell it from the other runs.

    ``a/full/test`` and ``a/ag/test`` become ``full/test`` and ``ag/test``; ``x/run1`` stays ``run1``. A path
    given twice keeps its whole path.
    """
    parts = [run.name.split("/") for run in runs]
    depth = [1] * len(runs)
    while True:
        names = ["/".join(part[-k:]) for part, k in zip(parts, depth)]
        clashing = [i for i, name in enumerate(names) if names.count(name) > 1 and depth[i] < len(parts[i])]
        if not clashing:
            return [replace(run, name=name) for run, name in zip(runs, names)]
        for i in clashing:
            depth[i] += 1


def _values(document: dict) -> np.ndarray:
    """(C,) the ``COLUMNS`` of a metrics.json document (KeyError when one is missing)."""
    document["dataset"]  # noqa: B018 (must exist)
    mean, axis_aligned = document["mean"], document["iou_axis_aligned"]["mean"]
    values = [mean[key] for key in (*HEADLINE_IOU_KEYS, *HEADLINE_POSE_KEYS)]
    values += [axis_aligned[key] for key in HEADLINE_IOU_KEYS]
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)


def _groups(runs: list[_Run]) -> list[list[int]]:
    groups: list[list[int]] = []
    for index, run in enumerate(runs):
        for group in groups:
            first = runs[group[0]]
            if run.config is not None and first.config == run.config:
                group.append(index)
                break
        else:
            groups.append([index])
    return groups


def ground_truth_digest(results: Sequence[dict]) -> str:
    """SHA-256 of every image's ground truth (class ids, RTs, scales as int64/float64), in order."""
    digest = hashlib.sha256()
    for result in results:
        for key, dtype in (("gt_class_ids", np.int64), ("gt_RTs", np.float64), ("gt_scales", np.float64)):
            array = np.ascontiguousarray(np.asarray(result.get(key, ()), dtype=dtype))
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _check_same_images(runs: list[_Run], loaded: dict[int, list[dict]]) -> None:
    names = [run.name for run in runs]
    datasets = {run.document["dataset"] for run in runs}
    if len(datasets) > 1:
        raise ConfigError(f"runs of different datasets ({', '.join(sorted(datasets))}) cannot be compared")
    digests = {index: ground_truth_digest(results) for index, results in loaded.items()}
    if len(set(digests.values())) > 1:
        first = min(digests)
        other = next(index for index in digests if digests[index] != digests[first])
        raise ConfigError(
            f"runs {names[first]} and {names[other]} were evaluated on different image sets "
            f"(their results.npz hold different ground truth); compare runs of one test set only"
        )
    known = [(run.name, run.document["counts"]["gts"]) for run in runs if "counts" in run.document]
    other = next((entry for entry in known if entry[1] != known[0][1]), None)
    if other is not None:
        raise ConfigError(
            f"runs {known[0][0]} ({known[0][1]} gts) and {other[0]} ({other[1]} gts) were evaluated "
            "on different image sets; compare runs of one test set only"
        )


def compare_runs(
    paths: Sequence[str | Path], *, bootstrap: int = 0, seed: int = 0, progress: bool = False
) -> Comparison:
    """Read runs, group seeds, and (``bootstrap > 0``) compute bootstrap intervals.

    Args:
        paths: test folders or metrics.json files; the first run's group is the baseline of the differences.
        bootstrap: number of image resamples (each one evaluates every run once); 0 for none.
        seed: seed of the resampling generator.
        progress: show a progress bar over the resamples.
    Returns:
        ``Comparison``.
    Raises:
        ConfigError: no runs, different datasets or image sets, or a bootstrap without ``results.npz``.
        DataFormatError: an unreadable metrics.json or results archive.
    """
    if not paths:
        raise ConfigError("name at least one run (a test folder or a metrics.json)")
    if bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0; got {bootstrap}")
    runs = _shortest_unique_names([_read_run(path) for path in paths])
    missing = [run.name for run in runs if run.archive is None]
    if bootstrap and missing:
        raise ConfigError(
            f"--bootstrap needs each run's results.npz (written by cleanpose test, or by "
            f"'cleanpose results convert'); missing for: {', '.join(missing)}"
        )
    loaded = {index: load_results_npz(run.archive).results for index, run in enumerate(runs) if run.archive}
    _check_same_images(runs, loaded)
    group_indices = _groups(runs)
    groups = tuple(
        RunGroup(
            runs[group[0]].name,
            tuple(runs[i].name for i in group),
            np.stack([_values(runs[i].document) for i in group]),
        )
        for group in group_indices
    )
    difference = np.stack([group.mean - groups[0].mean for group in groups])
    if not bootstrap:
        return Comparison(runs[0].document["dataset"], groups, 0, None, difference, None)
    samples = _bootstrap(runs, loaded, group_indices, bootstrap, np.random.default_rng(seed), progress)  # (B, G, C)
    interval = np.moveaxis(np.nanpercentile(samples, [2.5, 97.5], axis=0), 0, -1)
    difference_interval = np.moveaxis(np.nanpercentile(samples - samples[:, :1], [2.5, 97.5], axis=0), 0, -1)
    return Comparison(runs[0].document["dataset"], groups, bootstrap, interval, difference, difference_interval)


def _bootstrap(
    runs: list[_Run],
    loaded: dict[int, list[dict]],
    group_indices: list[list[int]],
    count: int,
    generator: np.random.Generator,
    progress: bool,
) -> np.ndarray:
    """(B, G, C) group means on ``count`` resamples of the images (one resample shared by every run).

    Each run is matched once; a resample only pools those per-image matches anew, in resample order (the
    matching of an image does not depend on the other images), which equals evaluating the resampled set.
    """
    from tqdm import tqdm

    num_images = len(loaded[0])
    prepared = []
    for index, run in enumerate(runs):
        spec = get_dataset(run.document["dataset"])
        tie_order = run.document.get("tie_order", "reference")
        arrays = collect_results(loaded[index], spec)
        matches = match_arrays(arrays, spec, tie_order=tie_order).select(
            list(HEADLINE_IOU_KEYS.values()), list(HEADLINE_POSE_KEYS.values())
        )
        kept = np.full(num_images, -1, dtype=np.int64)
        kept[arrays.image_source] = np.arange(len(arrays.image_source))
        prepared.append((matches, kept, tie_order))
    samples = np.empty((count, len(group_indices), len(COLUMNS)))
    for sample in tqdm(range(count), desc="bootstrap", unit="resample", disable=not progress):
        chosen = generator.integers(0, num_images, size=num_images)
        per_run = []
        for matches, kept, tie_order in prepared:
            images = kept[chosen]
            iou_ap, aa_ap, pose_ap = average_precisions(matches.take_images(images[images >= 0]), tie_order)
            # as Metrics and metrics.json: AP × 100, then the mean over classes
            per_run.append(np.concatenate([(100 * ap).mean(axis=0) for ap in (iou_ap, pose_ap, aa_ap)]))
        for group, members in enumerate(group_indices):
            samples[sample, group] = np.mean([per_run[index] for index in members], axis=0)
    return samples


def _cell(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def format_comparison_markdown(comparison: Comparison) -> str:
    """Markdown: one row per group (mean ± std (n) for seed groups; [2.5 %, 97.5 %] with a bootstrap),
    and with a bootstrap a second table of the differences to the first group."""
    header = "| run | n | " + " | ".join(COLUMNS) + " |\n|---|---|" + "---|" * len(COLUMNS) + "\n"
    lines = [
        f"AP in percent ({comparison.dataset}); iou*: official NOCS IoU, aa_iou*: axis-aligned IoU; "
        "seed groups: mean ± sample std"
        + (
            f"; [95 % bootstrap interval, {comparison.bootstrap} resamples of the images]"
            if comparison.bootstrap
            else ""
        ),
        "",
        header.rstrip(),
    ]
    for index, group in enumerate(comparison.groups):
        cells = []
        for column in range(len(COLUMNS)):
            cell = _cell(group.mean[column])
            if len(group.runs) > 1:
                cell += f" ± {_cell(group.std[column])}"
            if comparison.interval is not None:
                low, high = comparison.interval[index, column]
                cell += f" [{_cell(low)}, {_cell(high)}]"
            cells.append(cell)
        lines.append(f"| {group.label} | {len(group.runs)} | " + " | ".join(cells) + " |")
    if comparison.difference_interval is not None:
        lines += ["", f"Difference to {comparison.groups[0].label} [95 % bootstrap interval]", "", header.rstrip()]
        for index, group in enumerate(comparison.groups):
            cells = [
                f"{comparison.difference[index, column]:+.1f} [{_cell(low)}, {_cell(high)}]"
                for column, (low, high) in enumerate(comparison.difference_interval[index])
            ]
            lines.append(f"| {group.label} | {len(group.runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(comparison: Comparison, out_dir: str | Path) -> list[Path]:
    """Write ``compare.md``, ``compare.csv`` (one row per group and column, full precision) and
    ``compare.png`` (bars of the means with error bars: bootstrap interval, else ± std) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.md").write_text(format_comparison_markdown(comparison))
    with open(out_dir / "compare.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "run",
                "n",
                "runs",
                "metric",
                "mean",
                "std",
                "ci_low",
                "ci_high",
                "difference",
                "difference_ci_low",
                "difference_ci_high",
            ]
        )
        for index, group in enumerate(comparison.groups):
            for column, name in enumerate(COLUMNS):
                bounds = (
                    [*comparison.interval[index, column], *comparison.difference_interval[index, column]]
                    if comparison.interval is not None
                    else [math.nan] * 4
                )
                row = [
                    group.mean[column],
                    group.std[column],
                    *bounds[:2],
                    comparison.difference[index, column],
                    *bounds[2:],
                ]
                writer.writerow(
                    [
                        group.label,
                        len(group.runs),
                        ";".join(group.runs),
                        name,
                        *("" if math.isnan(value) else repr(float(value)) for value in row),
                    ]
                )
    _plot(comparison, out_dir / "compare.png")
    return [out_dir / "compare.md", out_dir / "compare.csv", out_dir / "compare.png"]


def _plot(comparison: Comparison, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(comparison.groups)
    figure, axes = plt.subplots(figsize=(max(8.0, 1.2 * len(COLUMNS)), 4.5))
    positions = np.arange(len(COLUMNS))
    for index, group in enumerate(comparison.groups):
        if comparison.interval is not None:
            errors = np.abs(comparison.interval[index].T - group.mean)
        else:
            errors = np.nan_to_num(group.std)
        label = group.label + (f" (n={len(group.runs)})" if len(group.runs) > 1 else "")
        axes.bar(
            positions + (index - (len(comparison.groups) - 1) / 2) * width,
            np.nan_to_num(group.mean),
            width,
            yerr=errors,
            capsize=3,
            label=label,
        )
    axes.set_xticks(positions, COLUMNS, rotation=30)
    axes.set_ylabel("AP (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small")
    bars = "95 % bootstrap interval" if comparison.interval is not None else "± std over seeds"
    axes.set_title(f"error bars: {bars}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
