"""The whole job on synthetic data: synthesize → initial queue → train → test → metrics → pictures.

`cleanpose demo` (and `make demo`) runs this with ``configs/demo-cpu.yaml``: a small network
(PSP-ResNet18 RGB branch, trainable, since no pretrained DINOv2 exists offline) trained on the CPU.
``quick`` runs the same chain on tiny sizes, for smoke tests.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cleanpose.config import TrainConfig, load_config
from cleanpose.data.build import build_run_test_dataset, build_training_datasets
from cleanpose.data.synth.generate import generate
from cleanpose.engine.queue_extraction import extract_queue, write_queue_file
from cleanpose.engine.test import evaluate_and_report, predict_dataset
from cleanpose.engine.train import resolve_device, train
from cleanpose.engine.visualize import visualize_results
from cleanpose.errors import OutputError
from cleanpose.metrics import Metrics
from cleanpose.models import load_checkpoint

logger = logging.getLogger(__name__)

MARKER = ".cleanpose-demo"

# Synthetic data per run: (scenes per split, frames per scene). At least 3 scenes: with 2 or more objects a
# scene, 3 scenes of a split hold all 6 categories (data.synth.scene.sample_scene), so no class mean is NaN.
DATA_SIZES = {"full": (6, 10), "quick": (3, 2)}

# `--quick`: the same chain, a few steps of a tiny network on a few frames.
QUICK_OVERRIDES = (
    "run.epochs=1",
    "run.iterations_per_epoch=2",
    "run.checkpoint_every=1",
    "run.log_every=1",
    "data.batch_sizes=[2, 2]",
    "data.images_per_epoch=[48, 48]",
    "model.front_door.queue_length=2",
    "model.front_door.num_queue_samples=1",
    "data.workers=0",
)


def _prepare(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).exists():
            raise OutputError(f"{out_dir}: exists and is not a cleanpose demo folder; choose another --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by cleanpose demo; rerunning the demo replaces this folder\n")


def demo_config(config_path: str | Path, out_dir: Path, *, quick: bool) -> TrainConfig:
    """The demo's training config with its paths pointed into `out_dir`."""
    overrides = [
        f"data.root={out_dir / 'data'}",
        f"run.out_dir={out_dir / 'train'}",
        f"run.initial_queue={out_dir / 'queue.pt'}",
    ]
    return load_config(config_path, TrainConfig, overrides=[*(QUICK_OVERRIDES if quick else ()), *overrides])


def run_demo(
    out_dir: str | Path, config_path: str | Path = "configs/demo-cpu.yaml", *, quick: bool = False, quiet: bool = False
) -> Metrics:
    """Run the whole chain; returns the test metrics (also written under ``out_dir/test``)."""
    out_dir = Path(out_dir)
    config = demo_config(config_path, out_dir, quick=quick)
    _prepare(out_dir)
    scenes, frames = DATA_SIZES["quick" if quick else "full"]
    logger.info("1/5 synthesizing %d scenes x %d frames per split into %s", scenes, frames, out_dir / "data")
    generate(
        out_dir / "data",
        "nocs",
        scenes=scenes,
        frames_per_scene=frames,
        seed=config.run.seed,
        workers=2,
        progress=not quiet,
    )
    device = resolve_device(config.run.device)
    logger.info("2/5 extracting the initial confounder queue")
    queue = extract_queue(config, build_training_datasets(config), device)
    write_queue_file(config.run.initial_queue, queue, source="demo: random-weight PointNet2-SSG")
    logger.info("3/5 training %d steps", config.run.epochs * config.run.iterations_per_epoch)
    checkpoint = train(config, quiet=quiet)
    logger.info("4/5 testing on the synthetic REAL275-like split")
    model = load_checkpoint(checkpoint).to(device)
    dataset = build_run_test_dataset(config, "segmentation")
    results = predict_dataset(
        model,
        dataset,
        out_dir / "test" / "results",
        device=device,
        seed=config.run.seed,
        quiet=quiet,
        archive=out_dir / "test" / "results.npz",
    )
    metrics = evaluate_and_report(results, "nocs", out_dir / "test")
    logger.info("5/5 drawing pictures")
    visualize_results(out_dir / "test" / "results.npz", config.data.root, out_dir / "pictures", limit=6)
    return metrics
