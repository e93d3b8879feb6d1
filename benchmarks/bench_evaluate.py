"""Time `cleanpose.metrics` on a REAL275-sized synthetic result set (docs/metrics.md §13).

2,754 images, ~4,900 gts, ~6,400 predictions over the six NOCS classes, ~45 % of images with a false
positive, some duplicate detections; fixed seed. Times the load-free evaluation (checks, per-pair
IoUs and errors, matching at every threshold, APs) and the report (json/csv/md + three PNG curves).
The reference code needs 50.4 s for the same work on the project's 2-core CPU machine.

Run from the repository root:  python -m benchmarks.bench_evaluate [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.timing import Laps, summarize_ms, time_calls
from cleanpose.metrics import evaluate_results, save_results_npz, write_report
from tests.metrics.result_builders import build_result_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (the best is reported)")
    parser.add_argument("--seed", type=int, default=275)
    parser.add_argument("--tie-order", choices=("reference", "stable"), default="reference")
    parser.add_argument(
        "--cli",
        action="store_true",
        help="also time `cleanpose evaluate` on the set saved as results.npz (fresh process, wall)",
    )
    parser.add_argument("--save", default=None, metavar="FILE.npz", help="keep the result set as a results archive")
    args = parser.parse_args()

    results = build_result_set(
        np.random.default_rng(args.seed), 2754, "nocs", mean_objects=1.76, detection_rate=0.97, duplicate_rate=0.08
    )
    num_gts = sum(len(result["gt_class_ids"]) for result in results)
    num_preds = sum(len(result["pred_class_ids"]) for result in results)
    with_false_positive = np.mean([len(r["pred_class_ids"]) > len(r["gt_class_ids"]) for r in results])
    print(
        f"result set: {len(results)} images, {num_gts} gts, {num_preds} predictions, "
        f"{100 * with_false_positive:.0f}% of images with more predictions than gts"
    )

    laps = Laps()
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out_dir:
            laps.start()
            metrics = evaluate_results(results, "nocs", tie_order=args.tie_order)
            laps.lap("evaluate")
            write_report(metrics, out_dir)
            laps.lap("report")
    evaluate_ms, report_ms = laps.times["evaluate"], laps.times["report"]
    total = summarize_ms([e + r for e, r in zip(evaluate_ms, report_ms)])
    print(
        f"evaluate: best {min(evaluate_ms) / 1e3:.3f} s, report: best {min(report_ms) / 1e3:.3f} s, "
        f"evaluate + report: best {total['min'] / 1e3:.3f} s, median {total['median'] / 1e3:.3f} s "
        f"over {args.repeats} runs (reference: 50.4 s; target <= 2.5 s)"
    )
    if args.save:
        save_results_npz(results, args.save)
    if args.cli:
        _time_cli(results, args.repeats, args.tie_order)
    means = {
        key: float(np.mean(metrics.pose_ap_at(*value)))
        for key, value in {"5deg2cm": (5, 2), "10deg5cm": (10, 5)}.items()
    }
    print(
        f"mean iou50 {np.mean(metrics.iou_ap_at(0.5)):.1f}, aa iou50 "
        f"{np.mean(metrics.iou_ap_at(0.5, axis_aligned=True)):.1f}, 5deg2cm {means['5deg2cm']:.1f}, "
        f"10deg5cm {means['10deg5cm']:.1f}"
    )


def _time_cli(results: list[dict], repeats: int, tie_order: str) -> None:
    source = Path(__file__).resolve().parents[1] / "src"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as folder:
        archive = save_results_npz(results, Path(folder) / "results.npz")

        def evaluate_in_a_fresh_process() -> None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cleanpose",
                    "--quiet",
                    "evaluate",
                    "--results",
                    str(archive),
                    "--out",
                    str(Path(folder) / "eval"),
                    "--tie-order",
                    tie_order,
                ],
                check=True,
                env=environment,
                stdout=subprocess.DEVNULL,
            )

        walls = summarize_ms(time_calls(evaluate_in_a_fresh_process, "cpu", repeats, warmup=0))
    print(
        f"cleanpose evaluate (CLI, results.npz, wall): best {walls['min'] / 1e3:.3f} s, "
        f"median {walls['median'] / 1e3:.3f} s"
    )


if __name__ == "__main__":
    main()
