"""Our whole training step and eval forward, timed as ../shared/refbench times the reference (issue 17).

Usage (from the repository root):
    python -m benchmarks.bench_train --device cuda [--precision bf16] [--graph-step] [--cuda-graph] [--profile DIR]
    OMP_NUM_THREADS=2 python -m benchmarks.bench_train --device cpu --batch 3 1 --warmup 1 --steps 2 --infer 1

The step is ``Trainer.run_step`` at the reference's size (``configs/nocs.yaml``: frozen DINOv2 ViT-S/14 with
random weights, the ULIP-2-sized PointBERT teacher with random weights in train mode, queue 6 × 80 filled with
random features, Adam + triangular CyclicLR) on pinned CPU batches of 30 CAMERA + 10 REAL objects: upload,
forward with augmentation, queue draw and teacher, loss, backward, queue push, optimiser and schedule step.
``torch.cuda.synchronize()`` before and after each step, host clock; ``--warmup`` untimed steps, then the
median, p10 and p90 of ``--steps`` timed ones, rotating through 4 distinct batches; peak tensor memory of the
timed steps. ``--graph-step``: the step replayed from a CUDA graph (``run.cuda_graph``; its warm-up steps and
the capture fall in the untimed warm-up). TF32 stays at PyTorch's defaults, as in the reference run (matrix
products fp32, cuDNN convolutions may use TF32); the report records them. ``--infer N ...``: the eval-mode
forward (``torch.inference_mode``) of one frame of N objects, timed the same way (``--infer-iters``); with
``--cuda-graph`` also replayed from a CUDA graph (``cleanpose.models.cuda_graph.GraphedEvalForward``: host queue
draw, copy into the static buffers, replay; the capture happens in the warm-up), and the graph's outputs checked
bit for bit against the eager forward's on one queue draw. ``--profile DIR``: a ``torch.profiler`` trace of one step
(``trace.json.gz``, summarise with ../shared/refbench/trace_top.py) and the forward device time of each
top-level module (``modules.json``). ``--count-syncs``: host synchronisations of one step, counted by
``torch.cuda.set_sync_debug_mode('warn')``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_model import training_batch
from benchmarks.timing import PeakMemory, device_name, summarize_ms, synchronize, time_calls
from cleanpose.config import TrainConfig, load_config
from cleanpose.engine.train import Trainer, build_loss, build_optimizer
from cleanpose.models import CleanPoseNet
from cleanpose.models.cuda_graph import GraphedEvalForward
from cleanpose.models.distillation import PointBERTTeacher

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "nocs.yaml"
TOP_MODULES = (
    "point_encoder", "rgb_encoder", "keypoint_detector", "feature_aggregator", "front_door",
    "nocs_predictor", "reconstructor", "pose_head", "distillation_head", "teacher",
)  # fmt: skip


def build_trainer(args: argparse.Namespace, device: torch.device) -> Trainer:
    """A trainer over the reference-size net with random weights (no datasets: batches are fed directly)."""
    overrides = [f"run.precision={args.precision}", f"run.seed={args.seed}", f"data.batch_sizes={args.batch}"]
    overrides += [f"run.cuda_graph={args.graph_step}"]
    overrides += args.set
    config = load_config(CONFIG, TrainConfig, overrides=overrides)
    torch.manual_seed(args.seed)
    model = CleanPoseNet(config.model, load_rgb_weights=False)
    generator = torch.Generator().manual_seed(args.seed)
    model.queue.fill(torch.randn(model.queue.features.shape, generator=generator))
    model.attach_teacher(PointBERTTeacher(mode=config.model.distillation.teacher_mode))
    model = model.to(device)
    optimizer, scheduler = build_optimizer(model, config)
    return Trainer(config, model, build_loss(config).to(device), optimizer, scheduler, [], device)


def pinned_batches(args: argparse.Namespace, num_categories: int, count: int = 4) -> list[list[dict]]:
    """``count`` distinct steps' inputs: one shard of one part per source (30 CAMERA, 10 REAL), pinned."""
    generator = torch.Generator().manual_seed(args.seed + 7)
    cpu = torch.device("cpu")
    pin = args.device.startswith("cuda")
    steps = []
    for _ in range(count):
        parts = [training_batch(generator, size, args.points, num_categories, cpu) for size in args.batch]
        steps.append([[{k: v.pin_memory() if pin else v for k, v in part.items()} for part in parts]])
    return steps


def time_steps(trainer: Trainer, steps: list, warmup: int, timed: int) -> tuple[list[float], int]:
    """Milliseconds of each timed ``run_step`` and the peak tensor memory (bytes) over them."""
    turn = itertools.count()

    def step() -> None:
        trainer.run_step(steps[next(turn) % len(steps)])
        trainer.step += 1

    time_calls(step, trainer.device, repeat=0, warmup=warmup)
    memory = PeakMemory(trainer.device)
    memory.start()
    times = time_calls(step, trainer.device, repeat=timed, warmup=0)
    return times, memory.stop()


def inference_frame(model: CleanPoseNet, args, objects: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The network inputs of one frame of ``objects`` objects, on ``device``."""
    generator = torch.Generator().manual_seed(args.seed + 11)
    frame = training_batch(generator, objects, args.points, model.config.num_categories, torch.device("cpu"))
    return {key: frame[key].to(device) for key in ("rgb", "pts", "choose", "category_label")}


def time_inference(model: CleanPoseNet, args, objects: int, device: torch.device) -> tuple[list[float], int]:
    """Milliseconds of each eval-mode forward of one frame of ``objects`` objects, and peak memory."""
    frame = inference_frame(model, args, objects, device)
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    memory = PeakMemory(device)
    with torch.inference_mode(), autocast:
        time_calls(lambda: model(frame), device, repeat=0, warmup=args.infer_warmup)
        memory.start()
        times = time_calls(lambda: model(frame), device, repeat=args.infer_iters, warmup=0)
    return times, memory.stop()


def time_graphed_inference(
    model: CleanPoseNet, args, objects: int, device: torch.device
) -> tuple[list[float], int, bool]:
    """:func:`time_inference` replayed from a CUDA graph: milliseconds of each call, the peak memory (capture
    included) and whether the graph's outputs equal the eager forward's bit for bit on one queue draw."""
    frame = inference_frame(model, args, objects, device)
    model.eval()
    graphed = GraphedEvalForward(model)
    memory = PeakMemory(device)
    memory.start()
    time_calls(lambda: graphed(frame, precision=args.precision), device, repeat=0, warmup=args.infer_warmup)
    times = time_calls(lambda: graphed(frame, precision=args.precision), device, repeat=args.infer_iters, warmup=0)
    peak = memory.stop()
    queue_idx = model.queue.sample_indices(model.config.front_door.num_queue_samples, np.random.RandomState(args.seed))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.inference_mode(), autocast:
        eager = model(frame, queue_idx=queue_idx)
    replayed = graphed(frame, queue_idx, precision=args.precision)
    identical = eager.keys() == replayed.keys() and all(torch.equal(replayed[key], eager[key]) for key in eager)
    return times, peak, identical


def count_syncs(trainer: Trainer, steps: list) -> int:
    """Host synchronisations of one step (CUDA only)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run_step(steps[0])
            synchronize(trainer.device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.step += 1
    return sum("synchroniz" in str(w.message) for w in caught)


def profile_step(trainer: Trainer, steps: list, out: Path) -> dict:
    """Trace of one step and the forward device time (ms) of each top-level module."""
    out.mkdir(parents=True, exist_ok=True)
    handles = []
    network = trainer.network
    for name in TOP_MODULES:
        module = getattr(network, name, None)
        if module is not None:
            handles += _range_hooks(module, f"module::{name}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=1, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule) as profiler:
        for i in range(2):
            trainer.run_step(steps[i % len(steps)])
            trainer.step += 1
            synchronize(trainer.device)
            profiler.step()
    for handle in handles:
        handle.remove()
    modules = {}
    for event in profiler.key_averages():
        if event.key.startswith("module::"):
            device_us = getattr(event, "device_time_total", 0.0)
            modules[event.key[len("module::") :]] = {"device_ms": device_us / 1e3, "cpu_ms": event.cpu_time_total / 1e3}
    table = profiler.key_averages().table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=70)
    (out / "ops.txt").write_text(table + "\n")
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "trace.json"
        profiler.export_chrome_trace(str(trace))
        with trace.open("rb") as source, gzip.open(out / "trace.json.gz", "wb") as target:
            shutil.copyfileobj(source, target)
    (out / "modules.json").write_text(json.dumps(modules, indent=1) + "\n")
    return modules


def _range_hooks(module: torch.nn.Module, label: str) -> list:
    stack = []

    def before(_module, _inputs):
        scope = torch.profiler.record_function(label)
        scope.__enter__()
        stack.append(scope)

    def after(_module, _inputs, _outputs):
        stack.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, nargs="+", default=[30, 10], help="objects per source (CAMERA REAL)")
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--infer", type=int, nargs="*", default=[5, 1, 40], help="objects per inference frame")
    parser.add_argument("--infer-warmup", type=int, default=10)
    parser.add_argument("--infer-iters", type=int, default=50)
    parser.add_argument("--cuda-graph", action="store_true", help="also time the inference replayed from a CUDA graph")
    parser.add_argument("--graph-step", action="store_true", help="replay the training step from a CUDA graph")
    parser.add_argument("--profile", type=Path, default=None, help="folder for the profile of one step")
    parser.add_argument("--count-syncs", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cuda_graph and not args.device.startswith("cuda"):
        parser.error(f"--cuda-graph needs a CUDA device (CUDA graphs); got --device {args.device}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    trainer = build_trainer(args, device)
    steps = pinned_batches(args, trainer.config.model.num_categories)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    report: dict = {
        "device": device_name(device),
        "torch": torch.__version__,
        "settings": settings,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "graph_step": trainer.graphed is not None,
    }
    times, peak = time_steps(trainer, steps, args.warmup, args.steps)
    report["train_step_ms"] = summarize_ms(times)
    report["train_peak_mib"] = peak / 2**20
    if device.type == "cuda":  # absolute, like the reference's figure; a CUDA graph's pool counts as reserved only
        report["train_peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        report["train_peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    if args.count_syncs and device.type == "cuda":
        report["host_syncs_per_step"] = count_syncs(trainer, steps)
    if args.profile is not None:
        report["module_forward_ms"] = profile_step(trainer, steps, args.profile)
    for objects in args.infer:
        times, peak = time_inference(trainer.network, args, objects, device)
        report[f"infer_{objects}_ms"] = summarize_ms(times)
        report[f"infer_{objects}_peak_mib"] = peak / 2**20
        if args.cuda_graph:
            times, peak, identical = time_graphed_inference(trainer.network, args, objects, device)
            report[f"infer_{objects}_graph_ms"] = summarize_ms(times)
            report[f"infer_{objects}_graph_peak_mib"] = peak / 2**20
            report[f"infer_{objects}_graph_identical"] = identical
    line = (
        f"ours {args.precision}{' graph-step' if report['graph_step'] else ''} {report['device']}: "
        f"step median {report['train_step_ms']['median']:.1f} ms "
        f"(p10 {report['train_step_ms']['p10']:.1f}, p90 {report['train_step_ms']['p90']:.1f}), "
        f"peak {report['train_peak_mib']:.0f} MiB above the start"
    )
    if device.type == "cuda":
        line += (
            f", {report['train_peak_allocated_mib']:.0f} MiB allocated, "
            f"{report['train_peak_reserved_mib']:.0f} MiB reserved"
        )
    for objects in args.infer:
        line += f"; infer {objects} obj {report[f'infer_{objects}_ms']['median']:.1f} ms"
        if args.cuda_graph:
            graphed = report[f"infer_{objects}_graph_ms"]["median"]
            identical = report[f"infer_{objects}_graph_identical"]
            line += f" (CUDA graph {graphed:.1f} ms, {'bit-identical' if identical else 'OUTPUTS DIFFER'})"
    if "host_syncs_per_step" in report:
        line += f"; host syncs/step {report['host_syncs_per_step']}"
    print(json.dumps(report, indent=1, default=str))
    print(line, flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
