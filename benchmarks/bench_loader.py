"""Training-sample throughput of one loader worker on NOCS-like 640 x 480 frames (CPU).

Builds a small REAL/CAMERA tree with the test fixture builders, then times `dataset[i]` in this
process (= one DataLoader worker) without a depth cache, and with a warm on-disk filled-depth cache.
The reference trains on 40-sample batches in ~50 ms GPU steps, i.e. ~800 samples/s over all workers.

    OMP_NUM_THREADS=1 python benchmarks/bench_loader.py [--frames 8] [--samples 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cleanpose.data.datasets import NocsTrainingDataset  # noqa: E402
from cleanpose.data.depth_cache import FilledDepthCache  # noqa: E402
from tests.data.conftest import build_nocs_tree  # noqa: E402


def _rate(dataset, samples: int) -> float:
    start = time.perf_counter()
    for index in range(samples):
        dataset[index % len(dataset)]
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per source")
    parser.add_argument("--samples", type=int, default=60, help="timed samples per configuration")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as folder:
        tree = build_nocs_tree(
            Path(folder) / "data", height=480, width=640, num_real=args.frames, num_camera=args.frames
        )
        print(f"{args.frames} frames per source, 640x480, {args.samples} samples per row, one process (CPU)")
        for source in ("real", "camera"):
            plain = NocsTrainingDataset(tree.root, source, args.samples)
            plain[0]  # warm-up (imports, first allocation)
            rate_plain = _rate(plain, args.samples)
            cache = FilledDepthCache(Path(folder) / f"cache_{source}")
            cached = NocsTrainingDataset(tree.root, source, args.samples, depth_cache=cache)
            for index in range(len(cached)):
                cached[index]  # fill the disk cache
            rate_cached = _rate(cached, args.samples)
            print(
                f"{source:6s}: no cache {rate_plain:6.1f} samples/s ({1000 / rate_plain:5.1f} ms/sample); "
                f"disk cache {rate_cached:6.1f} samples/s ({1000 / rate_cached:5.1f} ms/sample)"
            )


if __name__ == "__main__":
    main()
