"""Throughput of `cleanpose data prepare` on CAMERA training frames, and the extrapolated time of the
full CAMERA train set (275,000 frames) on 16 cores.

Usage (from the repository root):
    OMP_NUM_THREADS=1 python -m benchmarks.bench_prepare [--workers 2] [--folders 6] [--keep DIR]

Writes a raw synthetic CAMERA train set (`generate(raw=True)`, 640x480, 10 frames per folder, 4–6
objects with sensor noise), then times the frame stage of `prepare` (read the 5 raw files, label by
RANSAC + Umeyama, place the files, write the label) with `--workers` processes and prints its
wall-clock frames/s; then deletes the labels and redoes them in one process (`resume`, so the point
models are kept) to measure the CPU seconds per frame, which does not depend on how busy a shared
machine is; 275,000 × CPU s/frame / 16 is the 16-core estimate (frames are independent; disk
throughput is assumed not to limit). `--keep DIR` keeps the raw set there, e.g. to time the
reference scripts on the same frames.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.timing import Laps, cpu_seconds
from cleanpose.data.prepare import prepare
from cleanpose.data.synth import generate

CAMERA_TRAIN_FRAMES = 275_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folders", type=int, default=6, help="CAMERA folders of 10 frames")
    parser.add_argument("--keep", type=Path, default=None, help="keep the raw set in this (new) folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        raw = args.keep or folder / "raw"
        generate(
            raw,
            "nocs",
            scenes=args.folders,
            frames_per_scene=10,
            seed=0,
            workers=args.workers,
            splits=("camera_train",),
            instances_per_category=2,
            objects_range=(4, 6),
            progress=False,
            raw=True,
        )
        laps = Laps()
        laps.start()
        summary = prepare(raw, folder / "out", splits=("camera_train",), workers=args.workers, progress=False)
        laps.lap("prepare")
        # CPU per frame: redo every label in this process (resume keeps the point models)
        for label in (folder / "out").rglob("*_label.pkl"):
            label.unlink()
        cpu_start = cpu_seconds()
        again = prepare(raw, folder / "out", splits=("camera_train",), workers=1, resume=True, progress=False)
        cpu_per_frame = (cpu_seconds() - cpu_start) / again.frames["camera_train"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    frames = summary.frames["camera_train"]
    print(
        f"{frames} CAMERA frames at 640x480 ({summary.usable['camera_train']} labelled), {args.workers} workers: "
        f"frame stage {summary.seconds:.1f} s wall = {summary.frames_per_second:.1f} frames/s; "
        f"whole run {laps.times['prepare'][0] / 1e3:.1f} s "
        f"({summary.models} point models, worker start-up); load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"CPU time {1000 * cpu_per_frame:.1f} ms/frame (one process, labels redone) -> {CAMERA_TRAIN_FRAMES:,} "
        f"frames on 16 idle cores: {CAMERA_TRAIN_FRAMES * cpu_per_frame / 16 / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
