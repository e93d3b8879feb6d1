"""The official NOCS / HouseCat6D pose metrics (docs/metrics.md), vectorized.

Typical use::

    from cleanpose.metrics import load_results, evaluate_results, write_report
    loaded = load_results("runs/real275/results", "nocs")   # unpickles: only trusted files
    metrics = evaluate_results(loaded.results, "nocs", origins=loaded.origins)
    write_report(metrics, "runs/real275/eval")

Modules: ``datasets`` (class tables, symmetric lists), ``iou`` (official and axis-aligned 3-D IoU),
``pose_error`` (rotation/translation errors), ``argsort`` (the reference's order of equal values),
``matching`` (greedy matching), ``average_precision`` (VOC AP), ``results_io`` (reading and checking
result dicts), ``results_npz`` (results archives without pickle), ``evaluate`` (the whole metric),
``report`` (json/csv/md/png output), ``compare`` (tables of several runs, bootstrap intervals).
"""

from cleanpose.metrics.compare import Comparison, compare_runs, format_comparison_markdown, write_comparison
from cleanpose.metrics.datasets import DATASETS, DatasetSpec, get_dataset
from cleanpose.metrics.evaluate import Metrics, evaluate_arrays, evaluate_results
from cleanpose.metrics.report import format_markdown_table, metrics_to_json, write_report
from cleanpose.metrics.results_io import LoadedResults, collect_results, load_results
from cleanpose.metrics.results_npz import convert_results, load_results_npz, save_results_npz

__all__ = [
    "Comparison",
    "DATASETS",
    "DatasetSpec",
    "LoadedResults",
    "Metrics",
    "collect_results",
    "compare_runs",
    "convert_results",
    "evaluate_arrays",
    "evaluate_results",
    "format_comparison_markdown",
    "format_markdown_table",
    "get_dataset",
    "load_results",
    "load_results_npz",
    "metrics_to_json",
    "save_results_npz",
    "write_comparison",
    "write_report",
]
