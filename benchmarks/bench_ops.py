"""CPU/GPU time of the point operators and of PointNet2MSG forward+backward at training sizes.

Usage (from the repository root):
    python -m benchmarks.bench_ops [--batch 40] [--points 1024] [--repeat 3] [--device cpu] [--threads 1]

Sizes follow the first set-abstraction level of the reference network (docs/model.md §3): FPS of 512 centres
from N points, ball query of 32 neighbours at r = 0.02 m, grouping, three-NN from N points onto 512, and
the teacher's 32-NN of 512 centres among N points. Reports the median wall time of ``--repeat`` runs.
"""

import argparse

import torch

from benchmarks.timing import summarize_ms, time_calls
from cleanpose.models.point_encoder import PointNet2MSG
from cleanpose.ops import (
    ball_query,
    furthest_point_sample,
    gather_points,
    group_points,
    inverse_distance_weights,
    knn_points,
    three_interpolate,
    three_nn,
)


def centred_cloud(generator: torch.Generator, batch: int, num_points: int, device: str) -> torch.Tensor:
    """Object-sized clouds (about 20 cm across), centred on their mean, as the network sees them."""
    points = (torch.rand(batch, num_points, 3, generator=generator) - 0.5) * 0.2
    return (points - points.mean(1, keepdim=True)).to(device)


def timed_ms(fn, repeat: int, device: str) -> float:
    """Median milliseconds of ``repeat`` calls after one warm-up call."""
    return summarize_ms(time_calls(fn, device, repeat, warmup=1))["median"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-encoder", action="store_true", help="time only the ops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    batch, num_points, device = args.batch, args.points, args.device
    points = centred_cloud(generator, batch, num_points, device)
    points_cf = points.transpose(1, 2).contiguous()
    center_idx = furthest_point_sample(points, 512)
    centers = gather_points(points_cf, center_idx).transpose(1, 2).contiguous()
    neighbor_idx = ball_query(0.02, 32, points, centers)
    dists, idx = three_nn(points, centers)
    weights = inverse_distance_weights(dists)
    coarse_features = torch.randn(batch, 256, 512, generator=generator).to(device)
    point_features = torch.randn(batch, 64, num_points, generator=generator).to(device)

    cases = {
        f"furthest_point_sample {num_points}->512": lambda: furthest_point_sample(points, 512),
        "ball_query r=0.02 S=32, 512 centres": lambda: ball_query(0.02, 32, points, centers),
        "gather_points C=3, 512": lambda: gather_points(points_cf, center_idx),
        "group_points C=64, 512x32": lambda: group_points(point_features, neighbor_idx),
        f"three_nn {num_points} onto 512": lambda: three_nn(points, centers),
        f"three_interpolate C=256, 512->{num_points}": lambda: three_interpolate(coarse_features, idx, weights),
        "knn_points k=32 direct, 512 queries": lambda: knn_points(centers, points, 32),
        "knn_points k=32 expanded, 512 queries": lambda: knn_points(centers, points, 32, distance="expanded"),
    }
    print(
        f"device={device} threads={torch.get_num_threads()} B={batch} N={num_points} "
        f"(median of {args.repeat}, torch {torch.__version__})"
    )
    for name, fn in cases.items():
        print(f"  {name:45s} {timed_ms(fn, args.repeat, device):9.1f} ms")

    if not args.skip_encoder:
        encoder = PointNet2MSG().to(device).train()

        def step():
            encoder.zero_grad(set_to_none=True)
            encoder(points).sum().backward()

        def forward_only():
            with torch.no_grad():
                encoder(points)

        print(f"  {'PointNet2MSG forward (no grad)':45s} {timed_ms(forward_only, args.repeat, device):9.1f} ms")
        print(f"  {'PointNet2MSG forward+backward (train)':45s} {timed_ms(step, args.repeat, device):9.1f} ms")


if __name__ == "__main__":
    main()
