"""Writing ``Metrics``: metrics.json, metrics.csv, metrics.md and the AP curves (docs/metrics.md §11)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from cleanpose.metrics.evaluate import HEADLINE_IOU_KEYS, HEADLINE_POSE_KEYS, Metrics

__all__ = ["CSV_COLUMNS", "IOU_LEGEND", "format_markdown_table", "metrics_to_json", "plot_curves", "write_report"]

CSV_COLUMNS = ["class", *HEADLINE_IOU_KEYS, *HEADLINE_POSE_KEYS, *(f"aa_{key}" for key in HEADLINE_IOU_KEYS)]
"""Columns of metrics.csv and of the Markdown table."""
IOU_LEGEND = (
    "AP in percent. iou25/50/75: official NOCS 3D IoU (with its axis bug; comparable with the NOCS "
    "literature). aa_iou25/50/75: axis-aligned 3D IoU (the corrected IoU behind the CleanPose README's "
    "REAL275 IoU columns). Pose APs count only pairs with official IoU > 0.1."
)
"""The line above the Markdown table saying which IoU is which."""


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def metrics_to_json(metrics: Metrics) -> dict:
    """The metrics.json document of docs/metrics.md §11 (NaN → ``None``, classes in id order)."""
    headline = metrics.headline()
    keys = [*HEADLINE_IOU_KEYS, *HEADLINE_POSE_KEYS]
    return {
        "dataset": metrics.dataset,
        "tie_order": metrics.tie_order,
        "counts": {"images": metrics.num_images, "gts": metrics.num_gts, "predictions": metrics.num_predictions},
        "classes": {
            name: {key: _number(headline["classes"][key][row]) for key in keys}
            for row, name in enumerate(metrics.class_names)
        },
        "mean": {key: _number(headline["mean"][key]) for key in keys},
        "iou_axis_aligned": {
            "classes": {
                name: {key: _number(headline["axis_aligned_classes"][key][row]) for key in HEADLINE_IOU_KEYS}
                for row, name in enumerate(metrics.class_names)
            },
            "mean": {key: _number(headline["axis_aligned_mean"][key]) for key in HEADLINE_IOU_KEYS},
        },
    }


def _rows(metrics: Metrics) -> list[tuple[str, list[float | None]]]:
    document = metrics_to_json(metrics)
    axis_aligned = document["iou_axis_aligned"]
    rows = [
        (name, [*document["classes"][name].values(), *axis_aligned["classes"][name].values()])
        for name in metrics.class_names
    ]
    rows.append(("mean", [*document["mean"].values(), *axis_aligned["mean"].values()]))
    return rows


def format_markdown_table(metrics: Metrics) -> str:
    """The legend line and a Markdown table of the headline APs (one decimal, ``—`` for undefined)."""
    lines = [IOU_LEGEND, "", "| " + " | ".join(CSV_COLUMNS) + " |", "|" + "---|" * len(CSV_COLUMNS)]
    for name, values in _rows(metrics):
        cells = ["—" if value is None else f"{value:.1f}" for value in values]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(metrics: Metrics, out_dir: str | Path) -> list[Path]:
    """Write ap_iou.png, ap_degree.png and ap_cm.png: one line per class, the mean dashed.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    degrees, degree_ap = metrics.degree_curve()
    shifts, shift_ap = metrics.shift_curve()
    curves = [
        ("ap_iou.png", metrics.iou_thresholds * 100, metrics.iou_ap, "official 3D IoU threshold (%)"),
        ("ap_degree.png", degrees, degree_ap, "rotation limit (degrees), no translation limit"),
        ("ap_cm.png", shifts, shift_ap, "translation limit (cm), no rotation limit"),
    ]
    written = []
    for file_name, thresholds, ap, label in curves:
        figure = Figure(figsize=(6, 4.5), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for row, name in enumerate(metrics.class_names):
            axes.plot(thresholds, ap[row], label=name, linewidth=1.2)
        axes.plot(thresholds, ap.mean(axis=0), "k--", label="mean", linewidth=1.8)
        axes.set_xlabel(label)
        axes.set_ylabel("AP (%)")
        axes.set_ylim(0, 100)
        axes.set_xlim(thresholds[0], thresholds[-1])
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, ncol=2)
        axes.set_title(f"{metrics.dataset}: {metrics.num_images} images")
        figure.tight_layout()
        figure.savefig(out_dir / file_name)
        written.append(out_dir / file_name)
    return written


def write_report(metrics: Metrics, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write metrics.json, metrics.csv, metrics.md and (``plots``) the three curve PNGs to ``out_dir``.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, markdown_path = out_dir / "metrics.json", out_dir / "metrics.csv", out_dir / "metrics.md"
    json_path.write_text(json.dumps(metrics_to_json(metrics), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for name, values in _rows(metrics):
            writer.writerow([name, *("" if value is None else repr(value) for value in values)])
    markdown_path.write_text(format_markdown_table(metrics), encoding="utf-8")
    written = [json_path, csv_path, markdown_path]
    if plots:
        written += plot_curves(metrics, out_dir)
    return written
