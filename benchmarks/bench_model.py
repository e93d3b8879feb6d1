"""Time, peak memory and parameter count of every CleanPoseNet module at training size (issue 5).

Usage (from the repository root):
    python -m benchmarks.bench_model --device cuda [--precision bf16] [--iters 10 --warmup 3] [--json out.json]
    OMP_NUM_THREADS=2 python -m benchmarks.bench_model --device cpu --iters 1 --warmup 0 [--rows ...] [--backbones ...]

On a CPU one pass over every row at B = 40 takes minutes and the PSP-ResNet18 training step needs about
21 GB of RAM; ``--rows`` and ``--backbones`` pick a subset (``--rows step --backbones dino``).

The network is the reference size (``ModelConfig()`` defaults, docs/model.md §14: 6 categories, K = 96 keypoints,
S = 12 queue samples, 224 x 224 crops) with random weights, built once per RGB backbone (frozen DINOv2
ViT-S/14 from timm's random init; trainable PSP-ResNet18), with its queue filled with random features and
the PointBERT teacher (ULIP-2 size, random weights, ``teacher_mode`` of the config: train, as the reference)
attached. A seeded batch of B objects of N points (box surfaces 8-30 cm, in the camera frame, with labels)
goes through the net once in train mode; forward pre-hooks record what each submodule receives there, and
each module is then timed alone on those recorded inputs (detached copies; inputs that carry a gradient in
the net require one here too, so input gradients are computed as in training).

Modes: ``fwd+bwd`` runs the forward, then the backward of the sum of every floating output that requires a
gradient (forward and backward timed separately within one iteration); ``fwd`` (frozen DINOv2 backbone,
teacher) runs only the forward, with autograd on as in training (both skip the gradient of their frozen
part). The ``train step`` rows run the whole net (queue draw and push, augmentation, teacher) then
``CleanPoseLoss`` (counted in ``fwd``) and the backward of the total loss (``bwd``); the optimiser step is not
included. With ``--precision bf16`` every forward runs under ``torch.autocast(bfloat16)`` as the trainer
does (the loss in float32 on float32 copies of the outputs); backward runs outside autocast.

Time: mean over ``--iters`` iterations after ``--warmup`` untimed ones; CUDA: ``torch.cuda.Event`` pairs
on the current stream, waited for; CPU: ``time.perf_counter``. Gradients are reset to None before every
iteration, so their allocation is part of each iteration.

Memory: peak over the warm-up and timed iterations minus the level just before them (parameters, recorded
inputs and the other modules are in that level; gradients are not). CUDA: ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats`` (tensor memory, not the caching allocator's reserve). CPU: resident set
size (``resource.getrusage`` ``ru_maxrss`` after the kernel's high-water mark is reset through
``/proc/self/clear_refs``, minus the RSS before, read with psutil when installed, else from /proc); freed
heap memory is first returned with glibc's ``malloc_trim``. Where the high-water mark cannot be reset the
numbers are deltas of the whole process's high-water mark (lower bounds) and the output says so.

Parameters: trainable / frozen of the module; the train-step rows count the net without the teacher.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.timing import PeakMemory, device_mark, device_name, elapsed_ms
from cleanpose.config import ModelConfig
from cleanpose.geometry import euler_xyz_to_matrix
from cleanpose.models import CleanPoseNet
from cleanpose.models.distillation import PointBERTTeacher
from cleanpose.models.losses import CleanPoseLoss

IMAGE_SIZE = 224
"""Side of the RGB crop, pixels (data.image_size)."""

MODULES = (
    "point_encoder",
    "rgb_encoder",
    "keypoint_detector",
    "feature_aggregator",
    "front_door",
    "nocs_predictor",
    "reconstructor",
    "pose_head",
    "distillation_head",
    "teacher",
)
"""Submodules of CleanPoseNet timed alone, in table order."""

ROWS = (*MODULES, "step")
"""Names accepted by ``--rows``; ``step`` is the whole training step."""


@dataclasses.dataclass
class Case:
    """One row: a module (or the whole step) and how to run it once."""

    name: str
    module: nn.Module
    """Whose parameters are counted."""
    forward: Callable[[], Any]
    """Runs the forward; returns what the backward needs."""
    backward: Callable[[Any], None] | None
    """None for a forward-only row."""
    leaves: list[torch.Tensor]
    """Inputs whose ``.grad`` is reset before every iteration."""
    exclude_from_count: tuple[str, ...] = ()
    """Parameter-name prefixes left out of the count."""


@dataclasses.dataclass
class Result:
    """Measured numbers of one row (times in milliseconds, memory in bytes)."""

    name: str
    mode: str
    forward_ms: float
    backward_ms: float | None
    total_ms: float
    peak_bytes: int
    trainable_params: int
    frozen_params: int


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


def training_batch(
    generator: torch.Generator, batch: int, num_points: int, num_categories: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """A collated training batch as the NOCS loader gives it, drawn from ``generator`` (CPU) then moved.

    Objects are boxes with sides in [8, 30] cm, points on their surface plus 2 mm noise, rotated by Euler
    angles in [-180°, 180°)³ and placed 0.5-1.2 m in front of the camera.

    Returns:
        ``rgb`` (B, 3, 224, 224) float32, standard normal like ImageNet-normalised pixels;
        ``pts`` (B, N, 3) float32 m, camera
        frame; ``choose`` (B, N) int64; ``category_label`` (B, 1) int64; ``rotation_label`` (B, 3, 3);
        ``translation_label`` (B, 3) m; ``size_label`` (B, 3) m; ``pc_mask`` (B, N) float32 (95 % ones).
    """
    size = 0.08 + 0.22 * torch.rand(batch, 3, generator=generator)
    surface = torch.rand(batch, num_points, 3, generator=generator) - 0.5
    face_axis = torch.randint(0, 3, (batch, num_points, 1), generator=generator)
    face_side = torch.randint(0, 2, (batch, num_points, 1), generator=generator).float() - 0.5
    surface = surface.scatter(2, face_axis, face_side)
    noise = 0.002 * torch.randn(batch, num_points, 3, generator=generator)
    rotation = euler_xyz_to_matrix((torch.rand(batch, 3, generator=generator) * 2 - 1) * math.pi)
    low, span = torch.tensor([-0.2, -0.2, 0.5]), torch.tensor([0.4, 0.4, 0.7])
    translation = low + span * torch.rand(batch, 3, generator=generator)
    points = (surface * size.unsqueeze(1)) @ rotation.transpose(1, 2) + translation.unsqueeze(1) + noise
    values = {
        "rgb": torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "pts": points,
        "choose": torch.randint(0, IMAGE_SIZE * IMAGE_SIZE, (batch, num_points), generator=generator),
        "category_label": torch.randint(0, num_categories, (batch, 1), generator=generator),
        "rotation_label": rotation,
        "translation_label": translation,
        "size_label": size,
        "pc_mask": (torch.rand(batch, num_points, generator=generator) > 0.05).float(),
    }
    return {key: value.to(device) for key, value in values.items()}


def _detached(value: Any) -> Any:
    if torch.is_tensor(value):
        copy = value.detach().clone()
        return copy.requires_grad_(value.requires_grad and value.is_floating_point())
    if isinstance(value, tuple):
        return tuple(_detached(item) for item in value)
    if isinstance(value, dict):
        return {key: _detached(item) for key, item in value.items()}
    return value  # a torch.Generator or a number: shared as it is


def record_module_inputs(model: CleanPoseNet, run_forward: Callable[[], Any]) -> dict[str, tuple[tuple, dict]]:
    """What each submodule of ``MODULES`` receives during ``run_forward()``: detached ``(args, kwargs)``."""
    recorded: dict[str, tuple[tuple, dict]] = {}

    def recorder(name: str):
        def hook(module, args, kwargs):
            recorded[name] = (_detached(args), _detached(kwargs))

        return hook

    handles = [
        getattr(model, name).register_forward_pre_hook(recorder(name), with_kwargs=True)
        for name in MODULES
        if getattr(model, name, None) is not None
    ]
    try:
        run_forward()
    finally:
        for handle in handles:
            handle.remove()
    return recorded


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------


def _gradient_outputs(outputs: Any) -> list[torch.Tensor]:
    if torch.is_tensor(outputs):
        outputs = (outputs,)
    elif isinstance(outputs, dict):
        outputs = tuple(outputs.values())
    return [value for value in outputs if torch.is_tensor(value) and value.requires_grad]


def backward_of_sum(outputs: Any) -> None:
    """Backward of ``Σ output.sum()`` over the floating outputs that require a gradient."""
    torch.stack([value.float().sum() for value in _gradient_outputs(outputs)]).sum().backward()


def module_case(name: str, module: nn.Module, inputs: tuple[tuple, dict], autocast) -> Case:
    """Row of one submodule run on its recorded inputs; forward only when it is frozen (teacher, DINOv2)."""
    args, kwargs = inputs
    leaves = [value for value in (*args, *kwargs.values()) if torch.is_tensor(value) and value.requires_grad]
    trainable = any(parameter.requires_grad for parameter in module.parameters())
    # The DINOv2 backbone's only trainable part is its 1x1 projection; the issue asks for its forward.
    forward_only = not trainable or getattr(module, "frozen", False)

    def forward():
        with autocast():
            return module(*args, **kwargs)

    return Case(name, module, forward, None if forward_only else backward_of_sum, leaves)


def train_step_case(
    name: str,
    model: CleanPoseNet,
    batch: dict[str, torch.Tensor],
    loss: CleanPoseLoss,
    step_kwargs: Callable[[], dict[str, Any]],
    autocast,
) -> Case:
    """Row of the whole step: forward, float32 loss (forward part) and backward of the total."""

    def forward():
        with autocast():
            outputs = model(batch, **step_kwargs())
        outputs = {key: value.float() if value.is_floating_point() else value for key, value in outputs.items()}
        return loss(outputs, batch)["total"]

    return Case(name, model, forward, lambda total: total.backward(), [], exclude_from_count=("teacher.",))


# ---------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------


def _reset_gradients(case: Case) -> None:
    case.module.zero_grad(set_to_none=True)
    for leaf in case.leaves:
        leaf.grad = None


def measure(case: Case, device: torch.device, warmup: int, iters: int, memory: PeakMemory) -> Result:
    """Run ``case`` ``warmup`` + ``iters`` times; mean times of the timed runs and the peak of all."""
    _reset_gradients(case)
    memory.start()
    forward_ms, backward_ms = [], []
    for iteration in range(warmup + iters):
        _reset_gradients(case)
        start = device_mark(device)
        result = case.forward()
        middle = device_mark(device)
        if case.backward is not None:
            case.backward(result)
        end = device_mark(device)
        del result
        if iteration >= warmup:
            forward_ms.append(elapsed_ms(start, middle))
            backward_ms.append(elapsed_ms(middle, end))
    peak = memory.stop()
    _reset_gradients(case)
    counted = [
        parameter for name, parameter in case.module.named_parameters() if not name.startswith(case.exclude_from_count)
    ]
    forward_mean = float(np.mean(forward_ms))
    backward_mean = float(np.mean(backward_ms)) if case.backward is not None else None
    return Result(
        name=case.name,
        mode="fwd" if case.backward is None else "fwd+bwd",
        forward_ms=forward_mean,
        backward_ms=backward_mean,
        total_ms=forward_mean + (backward_mean or 0.0),
        peak_bytes=int(peak),
        trainable_params=sum(p.numel() for p in counted if p.requires_grad),
        frozen_params=sum(p.numel() for p in counted if not p.requires_grad),
    )


# ---------------------------------------------------------------------------------------------------
# Building and reporting
# ---------------------------------------------------------------------------------------------------


def build_network(backbone: str, teacher: nn.Module, generator: torch.Generator, device: torch.device) -> CleanPoseNet:
    """Reference-size net with ``backbone``, random weights, a random filled queue and ``teacher`` attached."""
    config = dataclasses.replace(ModelConfig(), rgb_backbone=backbone)
    model = CleanPoseNet(config, load_rgb_weights=False)
    queue_shape = model.queue.features.shape
    model.queue.fill(torch.randn(queue_shape, generator=generator))
    model.attach_teacher(teacher)
    return model.to(device).train()


def markdown_table(results: list[Result]) -> str:
    lines = [
        "| module | mode | fwd ms | bwd ms | total ms | peak MiB | trainable | frozen |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        backward = "—" if row.backward_ms is None else f"{row.backward_ms:.1f}"
        lines.append(
            f"| {row.name} | {row.mode} | {row.forward_ms:.1f} | {backward} | {row.total_ms:.1f} | "
            f"{row.peak_bytes / 2**20:.0f} | {row.trainable_params:,} | {row.frozen_params:,} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, default=40, help="objects per batch B (reference: 30 CAMERA + 10 REAL)")
    parser.add_argument("--points", type=int, default=1024, help="points per object N (at least 512)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations before them")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: forward under autocast")
    parser.add_argument("--backbones", default="dino,resnet", help="comma-separated RGB backbones; the per-module "
                        "rows other than rgb_encoder come from the first")  # fmt: skip
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)} "
                        "(rgb_encoder and step: one row per backbone)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results and settings to this file")
    args = parser.parse_args(argv)
    args.backbones = _names(parser, "--backbones", args.backbones, ("dino", "resnet"))
    args.rows = _names(parser, "--rows", args.rows, ROWS)
    if min(args.batch, args.iters) < 1 or args.warmup < 0 or args.points < 512:
        parser.error("--batch and --iters must be at least 1, --warmup at least 0, --points at least 512 "
                     "(the point encoder and the teacher sample 512 centres)")  # fmt: skip
    return args


def _names(parser: argparse.ArgumentParser, option: str, value: str, valid: tuple[str, ...]) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        parser.error(f"{option} {value!r}: unknown {', '.join(unknown) or 'empty list'}; valid: {', '.join(valid)}")
    return names


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available in this torch build or machine")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    torch.manual_seed(args.seed)  # benchmark-side seeding of the modules' default initialisation
    generator = torch.Generator().manual_seed(args.seed)
    config = ModelConfig()
    batch = training_batch(generator, args.batch, args.points, config.num_categories, device)
    teacher = PointBERTTeacher(mode=config.distillation.teacher_mode)
    loss = CleanPoseLoss()
    step_generator = torch.Generator(device=device).manual_seed(args.seed + 1)
    queue_state = np.random.RandomState(args.seed + 2)

    def step_kwargs() -> dict[str, Any]:
        return {"generator": step_generator, "queue_random_state": queue_state}

    memory = PeakMemory(device)
    print(
        f"device={device} ({device_name(device)}), torch {torch.__version__}, B={args.batch} N={args.points} "
        f"{IMAGE_SIZE}x{IMAGE_SIZE} crops, precision={args.precision}, mean of {args.iters} after {args.warmup} "
        f"warm-up\nmemory: {memory.method}\n{markdown_table([])}",
        flush=True,
    )
    results: list[Result] = []

    def run(case: Case) -> None:
        results.append(measure(case, device, args.warmup, args.iters, memory))
        print(markdown_table(results[-1:]).splitlines()[-1], flush=True)

    models = {name: build_network(name, teacher, generator, device) for name in args.backbones}
    first = models[args.backbones[0]]

    def first_forward():
        with autocast():
            return first(batch, **step_kwargs())

    module_rows = [name for name in MODULES if name in args.rows]
    if module_rows:
        # Every backbone receives the same (rgb, choose), so one recorded forward serves all of them.
        inputs = record_module_inputs(first, first_forward)
        for name in module_rows:
            for backbone, model in models.items() if name == "rgb_encoder" else [(None, first)]:
                label = name if backbone is None else f"{name} ({backbone})"
                run(module_case(label, getattr(model, name), inputs[name], autocast))
        del inputs
    if "step" in args.rows:
        for backbone, model in models.items():
            run(train_step_case(f"train step ({backbone})", model, batch, loss, step_kwargs, autocast))

    print(f"\n{markdown_table(results)}")
    if args.json is not None:
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        report = {
            "settings": settings,
            "device_name": device_name(device),
            "torch": torch.__version__,
            "memory_method": memory.method,
            "results": [dataclasses.asdict(row) for row in results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
