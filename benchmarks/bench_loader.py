"""Training-sample throughput of one loader worker on NOCS-like 640 x 480 frames (CPU).

Writes a small synthetic REAL/CAMERA training tree (`cleanpose.data.synth.generate`: 640 x 480, 4 objects
with sensor noise), then times `dataset[i]` in this process (= one DataLoader worker) without a depth cache,
and with a warm on-disk filled-depth cache. The reference trains on 40-sample batches in ~50 ms GPU steps,
i.e. ~800 samples/s over all workers.

Usage (from the repository root):
    OMP_NUM_THREADS=1 python -m benchmarks.bench_loader [--frames 8] [--samples 60]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2

from benchmarks.timing import time_calls
from cleanpose.data.datasets import NocsTrainingDataset
from cleanpose.data.depth_cache import FilledDepthCache
from cleanpose.data.synth import generate


def _rate(dataset, samples: int) -> float:
    """Samples per second of ``samples`` consecutive ``dataset[i]`` (cycling through the dataset)."""

    def read_all() -> None:
        for index in range(samples):
            dataset[index % len(dataset)]

    (milliseconds,) = time_calls(read_all, "cpu", repeat=1, warmup=0)
    return samples / (milliseconds / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per source")
    parser.add_argument("--samples", type=int, default=60, help="timed samples per configuration")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        generate(
            root,
            "nocs",
            frames_per_scene=args.frames,
            splits=("camera_train", "real_train"),
            objects_range=(4, 4),
            progress=False,
        )
        print(f"{args.frames} frames per source, 640x480, {args.samples} samples per row, one process (CPU)")
        for source in ("real", "camera"):
            plain = NocsTrainingDataset(root, source, args.samples)
            plain[0]  # warm-up (imports, first allocation)
            rate_plain = _rate(plain, args.samples)
            cache = FilledDepthCache(Path(folder) / f"cache_{source}")
            cached = NocsTrainingDataset(root, source, args.samples, depth_cache=cache)
            for index in range(len(cached)):
                cached[index]  # fill the disk cache
            rate_cached = _rate(cached, args.samples)
            print(
                f"{source:6s}: no cache {rate_plain:6.1f} samples/s ({1000 / rate_plain:5.1f} ms/sample); "
                f"disk cache {rate_cached:6.1f} samples/s ({1000 / rate_cached:5.1f} ms/sample)"
            )


if __name__ == "__main__":
    main()
