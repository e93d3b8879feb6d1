"""metrics.json / .csv / .md / PNG output (docs/metrics.md §11) and the `cleanpose evaluate` command."""

import csv
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from cleanpose import cli
from cleanpose.metrics import evaluate_results, format_markdown_table, metrics_to_json, write_report
from cleanpose.metrics.report import CSV_COLUMNS
from tests.metrics.result_builders import build_result_set
from tests.metrics.test_evaluate import EXTENTS, _image, _pose


def _metrics_with_undefined_class():
    gt = _pose(translation=(0.0, 0.0, 0.8))
    half_missed = _pose(translation=(0.3, 0.0, 0.8))
    results = [
        _image(
            [(1, gt, EXTENTS), (1, half_missed, EXTENTS)],
            [(1, gt, EXTENTS, 0.9), (3, _pose(translation=(-0.3, 0, 1.0)), EXTENTS, 0.7)],
        )
    ]
    return evaluate_results(results, "nocs")  # bottle: IoU AP 50, pose AP 100; camera: IoU undefined


def test_json_document(tmp_path):
    metrics = _metrics_with_undefined_class()
    write_report(metrics, tmp_path, plots=False)
    text = (tmp_path / "metrics.json").read_text(encoding="utf-8")
    assert "NaN" not in text
    document = json.loads(text)
    assert document == metrics_to_json(metrics)
    assert list(document) == ["dataset", "tie_order", "counts", "classes", "mean", "iou_axis_aligned"]
    assert document["tie_order"] == "reference"
    assert document["counts"] == {
        "images": metrics.num_images,
        "gts": metrics.num_gts,
        "predictions": metrics.num_predictions,
    }
    assert document["dataset"] == "nocs"
    assert document["classes"]["bottle"] == {
        "iou25": 50.0,
        "iou50": 50.0,
        "iou75": 50.0,
        "5deg2cm": 100.0,
        "5deg5cm": 100.0,
        "10deg2cm": 100.0,
        "10deg5cm": 100.0,
    }
    assert document["classes"]["camera"]["iou25"] is None and document["classes"]["camera"]["10deg5cm"] == 0.0
    assert document["mean"]["iou50"] is None and document["mean"]["5deg5cm"] == pytest.approx(100 / 6)
    assert document["iou_axis_aligned"]["classes"]["bottle"] == {"iou25": 50.0, "iou50": 50.0, "iou75": 50.0}
    assert document["iou_axis_aligned"]["mean"] == {"iou25": None, "iou50": None, "iou75": None}


def test_csv_and_markdown(tmp_path):
    metrics = _metrics_with_undefined_class()
    write_report(metrics, tmp_path, plots=False)
    with open(tmp_path / "metrics.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert (
        rows[0]
        == CSV_COLUMNS
        == [
            "class",
            "iou25",
            "iou50",
            "iou75",
            "5deg2cm",
            "5deg5cm",
            "10deg2cm",
            "10deg5cm",
            "aa_iou25",
            "aa_iou50",
            "aa_iou75",
        ]
    )
    assert [row[0] for row in rows[1:]] == [*metrics.class_names, "mean"]
    camera = rows[1 + 2]
    assert camera[1:4] == ["", "", ""] and camera[8:] == ["", "", ""] and float(camera[4]) == 0.0
    assert float(rows[-1][4]) == pytest.approx(100 / 6, rel=1e-15)  # full precision
    markdown = (tmp_path / "metrics.md").read_text(encoding="utf-8")
    assert markdown == format_markdown_table(metrics)
    lines = markdown.splitlines()
    assert "official NOCS 3D IoU" in lines[0] and "axis-aligned" in lines[0]
    assert lines[2] == "| " + " | ".join(CSV_COLUMNS) + " |"
    assert lines[4] == "| bottle | 50.0 | 50.0 | 50.0 | 100.0 | 100.0 | 100.0 | 100.0 | 50.0 | 50.0 | 50.0 |"
    assert lines[6] == "| camera | — | — | — | 0.0 | 0.0 | 0.0 | 0.0 | — | — | — |"
    assert lines[-1] == "| mean | — | — | — | 16.7 | 16.7 | 16.7 | 16.7 | — | — | — |"


def test_curves_are_written(tmp_path):
    metrics = evaluate_results(build_result_set(np.random.default_rng(0), 6), "nocs")
    written = write_report(metrics, tmp_path)
    for name in ("ap_iou.png", "ap_degree.png", "ap_cm.png"):
        assert tmp_path / name in written
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size == (600, 450)
    degrees, degree_ap = metrics.degree_curve()
    assert degrees.tolist() == list(range(61)) and np.all(np.diff(degree_ap, axis=1) >= -1e-9)  # monotone in D
    shifts, _ = metrics.shift_curve()
    assert shifts.tolist() == [i / 2 for i in range(31)]


def test_cli_evaluate(tmp_path, capsys):
    results = build_result_set(np.random.default_rng(1), 5)
    with open(tmp_path / "results.pkl", "wb") as handle:
        pickle.dump(results, handle)
    status = cli.main(
        ["--quiet", "evaluate", "--results", str(tmp_path / "results.pkl"), "--out", str(tmp_path / "out")]
    )
    assert status == 0
    printed = capsys.readouterr().out
    expected = evaluate_results(results, "nocs")
    assert printed == format_markdown_table(expected)
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["mean"]["5deg2cm"] == pytest.approx(float(np.mean(expected.pose_ap_at(5, 2))))
    results[2]["gt_scales"][0, 0] = -1.0
    with open(tmp_path / "results.pkl", "wb") as handle:
        pickle.dump(results, handle)
    status = cli.main(
        [
            "--quiet",
            "evaluate",
            "--results",
            str(tmp_path / "results.pkl"),
            "--out",
            str(tmp_path / "o2"),
            "--dataset",
            "nocs",
        ]
    )
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("cleanpose evaluate: error: ") and "results.pkl[2]: key 'gt_scales', instance 0" in error
    assert "\n" not in error


def test_help_warns_about_pickles(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "only evaluate result pickles you trust" in " ".join(capsys.readouterr().out.split())
