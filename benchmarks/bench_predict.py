"""Latency of `cleanpose.Predictor` per frame with 1, 5 and 20 objects: preprocessing and network.

A synthetic 640 x 480 frame (decoded arrays: RGB, uint16 millimetre depth with holes, an id mask of
square objects on a grid) goes through `Predictor.prepare` (depth filling, crop, back-projection, point
sampling, colour normalization: "preprocessing") and `Predictor.run_network` (host-to-device copy,
forward, outputs back: "net"). The network is the reference-size CleanPose (DINOv2 ViT-S/14 with random
weights unless --checkpoint is given; 224 px crops, 1024 points). The time of the hole filling alone
(`fill_missing`, part of preprocessing) is printed too.

Run from the repository root:  python -m benchmarks.bench_predict [--device cuda] [--cuda-graph] [--repeats N]
(``--cuda-graph``: the network replayed from a CUDA graph per object count, captured in the warm-up run; the
CPU ignores it.)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.timing import Laps, device_name, summarize_ms
from cleanpose.config import ModelConfig, RgbBackboneConfig
from cleanpose.data.collate import stack_instances
from cleanpose.data.depth_completion import fill_missing
from cleanpose.data.formats.nocs import REAL_INTRINSICS
from cleanpose.engine.predict import Frame, Predictor
from cleanpose.models.net import CleanPoseNet


def synthetic_frame(num_objects: int, seed: int = 0) -> Frame:
    """A 480 x 640 frame with `num_objects` 56 x 56 px objects on a 5 x 4 grid, 0.6-1.2 m away."""
    rng = np.random.default_rng(seed)
    height, width = 480, 640
    depth = np.full((height, width), 1500, np.uint16)
    mask = np.zeros((height, width), np.uint8)
    for index in range(num_objects):
        row, col = divmod(index, 5)
        top, left = 32 + row * 112, 36 + col * 120
        rows = np.arange(56)[:, None]
        depth[top : top + 56, left : left + 56] = 600 + 30 * index + rows
        mask[top : top + 56, left : left + 56] = index + 1
    depth[rng.random((height, width)) < 0.05] = 0
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    names = ("bottle", "bowl", "camera", "can", "laptop", "mug")
    return Frame(rgb, depth, REAL_INTRINSICS, mask, [names[i % 6] for i in range(num_objects)])


def build_predictor(args) -> Predictor:
    if args.checkpoint:
        return Predictor.from_checkpoint(
            args.checkpoint, device=args.device, precision=args.precision, cuda_graph=args.cuda_graph
        )
    model = CleanPoseNet(ModelConfig(rgb=RgbBackboneConfig(random_init=True)), load_rgb_weights=False)
    queue = model.queue.features
    model.queue.fill(torch.randn(queue.shape, generator=torch.Generator().manual_seed(0)))
    return Predictor(model, device=args.device, precision=args.precision, cuda_graph=args.cuda_graph)


def time_frame(predictor: Predictor, frame: Frame, repeats: int) -> dict[str, float]:
    """Median milliseconds of depth filling, preprocessing and network over `repeats` runs (after a warm-up)."""
    laps = Laps(predictor.device)
    for repeat in range(repeats + 1):
        if repeat == 1:  # the first run warms up caches, kernels and autotuning
            laps.times.clear()
        laps.start()
        fill_missing(frame.depth)
        laps.lap("fill")
        prepared = predictor.prepare(frame)
        laps.lap("pre")
        batch = stack_instances(prepared.samples, predictor.num_points, predictor.image_size)
        laps.start()
        predictor.run_network(batch)
        laps.lap("net")
    return {key: summarize_ms(values)["median"] for key, values in laps.times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 5, 20], help="objects per frame")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size (the median is reported)")
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of random weights")
    parser.add_argument("--cuda-graph", action="store_true", help="the net from CUDA graphs (CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    predictor = build_predictor(args)
    print(
        f"device {args.device} ({device_name(predictor.device)}), "
        f"precision {args.precision}, crops {predictor.image_size} px, {predictor.num_points} points, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("| objects | preprocessing ms (of which fill_missing) | net ms | total ms |")
    print("|---:|---:|---:|---:|")
    for count in args.objects:
        times = time_frame(predictor, synthetic_frame(count), args.repeats)
        print(
            f"| {count} | {times['pre']:.1f} ({times['fill']:.1f}) | {times['net']:.1f} | "
            f"{times['pre'] + times['net']:.1f} |"
        )


if __name__ == "__main__":
    main()
