"""`cleanpose compare` on real runs: two tiny configs trained on the CPU, each tested with three seeds."""

import json

import numpy as np
import pytest

from cleanpose import cli
from cleanpose.config import TrainConfig, load_config
from cleanpose.engine.train import train
from cleanpose.metrics import compare_runs, load_results_npz
from cleanpose.metrics.compare import COLUMNS


def _mean_row(folder):
    document = json.loads((folder / "metrics.json").read_text())
    values = [document["mean"][key] for key in COLUMNS[:7]]
    values += [document["iou_axis_aligned"]["mean"][key] for key in ("iou25", "iou50", "iou75")]
    return np.array([np.nan if value is None else value for value in values])


def test_compare_three_seeds_of_two_configs(train_config_file, tmp_path, capsys):
    folders = []
    for name, lr in (("a", 5e-3), ("b", 2e-2)):
        config_path = train_config_file(
            f"{name}.yaml",
            optim={"max_lr": lr},
            run={"out_dir": str(tmp_path / name), "epochs": 1, "iterations_per_epoch": 2},
        )
        checkpoint = train(load_config(config_path, TrainConfig), quiet=True)
        for seed in (1, 2, 3):  # the test seed draws the points and the queue samples
            out = tmp_path / f"{name}_test_seed{seed}"
            assert (
                cli.main(
                    [
                        "--quiet",
                        "test",
                        "--config",
                        str(config_path),
                        "--checkpoint",
                        str(checkpoint),
                        "--out",
                        str(out),
                        "--set",
                        f"run.seed={seed}",
                    ]
                )
                == 0
            )
            assert (out / "config.yaml").is_file() and (out / "results.npz").is_file()
            folders.append(out)
    archive = load_results_npz(folders[0] / "results.npz")
    assert archive.results and all("pred_RTs" in result and "image_path" in result for result in archive.results)

    comparison = compare_runs(folders, bootstrap=3)
    assert [group.runs for group in comparison.groups] == [
        tuple(f.name for f in folders[:3]),
        tuple(f.name for f in folders[3:]),
    ]
    for group, members in zip(comparison.groups, (folders[:3], folders[3:])):
        rows = np.stack([_mean_row(folder) for folder in members])
        np.testing.assert_allclose(group.mean, rows.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(group.std, rows.std(axis=0, ddof=1), rtol=0, atol=1e-12)
    assert np.all(comparison.difference_interval[0] == 0)

    capsys.readouterr()
    assert cli.main(["--quiet", "compare", *map(str, folders), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "| a_test_seed1 | 3 |" in printed and "| b_test_seed1 | 3 |" in printed
    assert {path.name for path in (tmp_path / "cmp").iterdir()} == {"compare.md", "compare.csv", "compare.png"}
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
