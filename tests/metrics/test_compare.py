"""cleanpose.metrics.compare on hand-made runs: seed groups against mean/std computed from the metrics.json
files, bootstrap intervals against the resampling redone here, identical runs, and refused inputs."""

import copy
import csv
import json

import numpy as np
import pytest
import yaml

from cleanpose.errors import ConfigError
from cleanpose.metrics import (
    compare_runs,
    evaluate_results,
    metrics_to_json,
    save_results_npz,
    write_comparison,
    write_report,
)
from cleanpose.metrics.compare import COLUMNS, ground_truth_digest
from cleanpose.metrics.evaluate import average_precisions, match_arrays
from cleanpose.metrics.results_io import collect_results
from tests.metrics import tie_cases
from tests.metrics.result_builders import build_result_set

BASE = build_result_set(np.random.default_rng(21), 30, "nocs", mean_objects=2.0)


def _noisy(seed: int, shift_m: float) -> list[dict]:
    """BASE with every predicted translation moved by a draw of ``shift_m`` per axis (same images and gts)."""
    rng = np.random.default_rng(seed)
    results = copy.deepcopy(BASE)
    for result in results:
        result["pred_RTs"][:, :3, 3] += rng.normal(0.0, shift_m, (len(result["pred_RTs"]), 3)).astype(np.float32)
    return results


def _run(folder, results, config=None, archive=True):
    write_report(evaluate_results(results, "nocs"), folder)
    if archive:
        save_results_npz(results, folder / "results.npz")
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _config(lr: float, seed: int) -> dict:
    return {"optim": {"max_lr": lr}, "run": {"seed": seed, "out_dir": f"runs/lr{lr}_seed{seed}"}}


def _values(folder_or_document) -> np.ndarray:
    document = (
        folder_or_document
        if isinstance(folder_or_document, dict)
        else json.loads((folder_or_document / "metrics.json").read_text())
    )
    row = [document["mean"][key] for key in COLUMNS[:7]] + [
        document["iou_axis_aligned"]["mean"][key] for key in ("iou25", "iou50", "iou75")
    ]
    return np.array(row, dtype=float)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    folders = []
    for lr, shift in ((1e-3, 0.004), (5e-3, 0.012)):
        for seed in (1, 2, 3):
            folder = root / f"lr{lr}_seed{seed}"
            folders.append(_run(folder, _noisy(seed * 10 + int(lr * 1e4), shift), _config(lr, seed)))
    return folders


def test_seed_groups_are_mean_and_sample_std_of_the_runs(runs, tmp_path):
    comparison = compare_runs(runs)
    assert [group.runs for group in comparison.groups] == [
        tuple(f.name for f in runs[:3]),
        tuple(f.name for f in runs[3:]),
    ]
    for group, members in zip(comparison.groups, (runs[:3], runs[3:])):
        values = np.stack([_values(folder) for folder in members])
        np.testing.assert_allclose(group.mean, values.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(group.std, values.std(axis=0, ddof=1), rtol=0, atol=1e-12)
    assert comparison.interval is None
    files = write_comparison(comparison, tmp_path / "out")
    assert [file.name for file in files] == ["compare.md", "compare.csv", "compare.png"]
    rows = list(csv.DictReader((tmp_path / "out" / "compare.csv").open()))
    assert len(rows) == 2 * len(COLUMNS) and rows[0]["n"] == "3" and rows[0]["ci_low"] == ""
    assert float(rows[len(COLUMNS)]["mean"]) == pytest.approx(comparison.groups[1].mean[0], abs=1e-12)
    assert "| lr0.001_seed1 | 3 |" in (tmp_path / "out" / "compare.md").read_text()


def test_bootstrap_intervals_redone_by_hand(runs):
    count, seed = 4, 4
    comparison = compare_runs(runs, bootstrap=count, seed=seed)
    loaded = [
        [result for result in _noisy(s * 10 + int(lr * 1e4), shift)]
        for lr, shift in ((1e-3, 0.004), (5e-3, 0.012))
        for s in (1, 2, 3)
    ]
    generator = np.random.default_rng(seed)
    samples = np.empty((count, 2, len(COLUMNS)))
    for sample in range(count):
        chosen = generator.integers(0, len(BASE), size=len(BASE))
        per_run = []
        for results in loaded:
            per_run.append(_values(metrics_to_json(evaluate_results([results[image] for image in chosen], "nocs"))))
        samples[sample] = [np.mean(per_run[:3], axis=0), np.mean(per_run[3:], axis=0)]
    expected = np.moveaxis(np.nanpercentile(samples, [2.5, 97.5], axis=0), 0, -1)
    np.testing.assert_allclose(comparison.interval, expected, rtol=0, atol=1e-9)
    difference = np.moveaxis(np.nanpercentile(samples - samples[:, :1], [2.5, 97.5], axis=0), 0, -1)
    np.testing.assert_allclose(comparison.difference_interval, difference, rtol=0, atol=1e-9)
    assert np.all(comparison.difference_interval[0] == 0)  # the baseline against itself
    assert np.all(comparison.interval[..., 0] <= comparison.interval[..., 1])


def test_identical_runs_differ_by_exactly_zero(tmp_path):
    first = _run(tmp_path / "a", BASE, _config(1e-3, 1))
    second = _run(tmp_path / "b", BASE, _config(2e-3, 1))  # another config: its own group
    comparison = compare_runs([first, second], bootstrap=5)
    assert len(comparison.groups) == 2
    assert np.all(comparison.difference == 0) and np.all(comparison.difference_interval == 0)
    # one image: every resample is that image, so the interval is the value itself
    single = [_run(tmp_path / "one", BASE[:1])]
    one = compare_runs(single, bootstrap=4)
    np.testing.assert_array_equal(one.interval[0, :, 0], one.groups[0].mean)
    np.testing.assert_array_equal(one.interval[0, :, 1], one.groups[0].mean)


def test_refused_inputs(tmp_path):
    full = _run(tmp_path / "full", BASE)
    with_gt = next(index for index, result in enumerate(BASE) if len(result["gt_class_ids"]))
    subset = BASE[:with_gt] + BASE[with_gt + 1 :]
    fewer = _run(tmp_path / "fewer", subset)
    with pytest.raises(ConfigError, match="different image sets"):
        compare_runs([full, fewer])
    metrics_only = _run(tmp_path / "json_only", subset, archive=False)
    with pytest.raises(ConfigError, match=r"different image sets"):  # caught by the gt counts of metrics.json
        compare_runs([full, metrics_only / "metrics.json"])
    with pytest.raises(ConfigError, match="needs each run's results.npz"):
        compare_runs([full, metrics_only], bootstrap=3)
    with pytest.raises(ConfigError, match="neither a test folder"):
        compare_runs([tmp_path / "nowhere"])
    assert ground_truth_digest(BASE) != ground_truth_digest(BASE[::-1])


@pytest.mark.parametrize("tie_order", ["reference", "stable"])
def test_resampled_matches_equal_evaluating_the_resampled_list(tie_order):
    # all scores 1.0 and crowded images: every AP depends on the pooled order of the resample
    results = tie_cases.housecat6d_all_scores_one()
    results = results[:60] + results[-3:] + [{key: value[:0] for key, value in results[0].items()}]
    arrays = collect_results(results, "housecat6d")
    matches = match_arrays(arrays, "housecat6d", tie_order=tie_order)
    chosen = np.random.default_rng(8).integers(0, len(results), size=len(results))
    lookup = np.full(len(results), -1)
    lookup[arrays.image_source] = np.arange(len(arrays.image_source))
    images = lookup[chosen]
    iou_ap, aa_ap, pose_ap = average_precisions(matches.take_images(images[images >= 0]), tie_order)
    expected = evaluate_results([results[index] for index in chosen], "housecat6d", tie_order=tie_order)
    np.testing.assert_array_equal(100 * iou_ap, expected.iou_ap)
    np.testing.assert_array_equal(100 * aa_ap, expected.axis_aligned_iou_ap)
    np.testing.assert_array_equal(100 * pose_ap, expected.pose_ap)


def test_runs_are_named_by_the_fewest_path_parts_that_differ(tmp_path):
    # Test folders of several runs are all called "test": the names keep as many parent folders as needed.
    paths = [tmp_path / "synth" / "full" / "test", tmp_path / "synth" / "ag" / "test", tmp_path / "other" / "run1"]
    for index, path in enumerate(paths):
        path.mkdir(parents=True)
        _run(path, BASE, _config(1e-3 * (index + 1), 0))
    metrics_file = tmp_path / "synth" / "full" / "test" / "metrics.json"
    comparison = compare_runs([*paths, metrics_file])
    whole = str(paths[0]).lstrip("/")  # given twice (folder and its metrics.json): the whole path, one group
    assert [group.runs for group in comparison.groups] == [(whole, whole), ("ag/test",), ("run1",)]
