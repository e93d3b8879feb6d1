"""Training-sample throughput of one loader worker on NOCS-like 640 x 480 frames (CPU).

Writes a small synthetic REAL/CAMERA training tree (`cleanpose.data.synth.generate`: 640 x 480, 4 objects
with sensor noise), then times `dataset[i]` in this process (= one DataLoader worker) without a cache, with a warm
on-disk filled-depth cache, and with both the depth cache and a warm decoded colour/mask cache
(`cleanpose.data.decoded_cache`, ``data.decoded_cache_dir``); it checks that the cached samples equal the
uncached ones. The reference trains on 40-sample batches in ~50 ms GPU steps,
i.e. ~800 samples/s over all workers.

Usage (from the repository root):
    OMP_NUM_THREADS=1 python -m benchmarks.bench_loader [--frames 8] [--samples 60]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import torch

from benchmarks.timing import time_calls
from cleanpose.data.datasets import NocsTrainingDataset
from cleanpose.data.decoded_cache import DecodedFrameCache
from cleanpose.data.depth_cache import FilledDepthCache
from cleanpose.data.synth import generate


def _rate(dataset, samples: int) -> float:
    """Samples per second of ``samples`` consecutive ``dataset[i]`` (cycling through the dataset)."""

    def read_all() -> None:
        for index in range(samples):
            dataset[index % len(dataset)]

    (milliseconds,) = time_calls(read_all, "cpu", repeat=1, warmup=0)
    return samples / (milliseconds / 1e3)


def _check_equal(reference, dataset, samples: int) -> None:
    """Raise unless every key of the first `samples` samples of `dataset` equals `reference`'s."""
    for index in range(samples):
        expected, got = reference[index], dataset[index]
        for key, value in expected.items():
            if not torch.equal(value, got[key]):
                raise AssertionError(f"sample {index}: {key} differs with the caches")


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
            rates = {"no cache": rate_plain}
            depth_cache = FilledDepthCache(Path(folder) / f"depth_{source}")
            decoded_cache = DecodedFrameCache(Path(folder) / f"decoded_{source}")
            for name, extra in (("depth cache", {}), ("depth + decoded cache", {"decoded_cache": decoded_cache})):
                cached = NocsTrainingDataset(root, source, args.samples, depth_cache=depth_cache, **extra)
                for index in range(len(cached)):
                    cached[index]  # fill the disk caches
                rates[name] = _rate(cached, args.samples)
                _check_equal(plain, cached, min(8, args.samples))
            rows = [f"{name} {rate:6.1f}/s ({1000 / rate:5.1f} ms)" for name, rate in rates.items()]
            print(f"{source:6s}: " + "; ".join(rows))


if __name__ == "__main__":
    main()
