"""Training hooks: checkpoints, loss logs (JSON lines + TensorBoard), validation, progress, skip counts, curves.

Each hook sees the trainer (``self.trainer``) and may act before/after training, each epoch and each
step. Only rank 0 writes files or the console; the loss log all-reduces over ranks, so it must run
on every rank. A hook with state (``state_dict``) has it saved in every checkpoint and restored on resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from cleanpose.data.build import build_run_test_dataset
from cleanpose.engine import distributed
from cleanpose.engine.checkpoint import save_training_state
from cleanpose.engine.test import evenly_spaced, load_items, predict_items
from cleanpose.fileio import atomic_write_bytes
from cleanpose.metrics import evaluate_results, metrics_to_json
from cleanpose.metrics.evaluate import HEADLINE_IOU_KEYS, HEADLINE_POSE_KEYS

logger = logging.getLogger(__name__)

LOSS_LOG = "losses.jsonl"
METRIC_LOG = "metrics.jsonl"
BEST_CHECKPOINT = "best.pt"
KEPT_CHECKPOINT = "step_{step:06d}.pt"


class HookBase:
    """Does nothing; subclasses override the moments they need."""

    trainer = None

    def before_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_step(self, result) -> None: ...

    def after_epoch(self) -> None: ...

    def after_train(self) -> None: ...

    def state_dict(self) -> dict:
        """Plain values to keep in checkpoints; ``{}``: nothing to keep."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def call_hooks(hooks: Sequence[HookBase], name: str, *args) -> None:
    """Call method ``name`` of every hook, in order."""
    for hook in hooks:
        getattr(hook, name)(*args)


@contextlib.contextmanager
def training_hooks(hooks: Sequence[HookBase]) -> Iterator[None]:
    """Run ``before_train`` on entry and ``after_train`` on exit, also when the body raises.

    After an error in the body, every hook's ``after_train`` still runs (the TensorBoard writer and the
    progress bar close); an error of ``after_train`` itself is then logged, not raised, so the body's error
    is the one that propagates.
    """
    call_hooks(hooks, "before_train")
    try:
        yield
    except BaseException:
        for hook in hooks:
            try:
                hook.after_train()
            except Exception:
                logger.exception("%s.after_train failed after a training error", type(hook).__name__)
        raise
    call_hooks(hooks, "after_train")


class CheckpointHook(HookBase):
    """Writes ``last.pt`` every `every` steps and at each epoch end (rank 0, atomic).

    With ``keep_every`` > 0 the checkpoint of every step that is a multiple of it is also written (atomically)
    to ``step_<step:06d>.pt`` beside ``last.pt``, which later checkpoints do not overwrite.
    """

    def __init__(self, path: Path, every: int, keep_every: int = 0):
        self.path = path
        self.every = every
        self.keep_every = keep_every
        self._saved_step = -1

    def _save(self) -> None:
        trainer = self.trainer
        if distributed.is_main_process() and trainer.step != self._saved_step:
            save_training_state(
                self.path,
                trainer.network,
                trainer.optimizer,
                trainer.scheduler,
                trainer.step,
                trainer.config,
                hooks=trainer.hook_state(),
            )
            self._saved_step = trainer.step
        distributed.barrier()

    def after_step(self, result) -> None:
        step = self.trainer.step
        if step % self.every == 0 or (self.keep_every and step % self.keep_every == 0):
            self._save()
        if self.keep_every and step % self.keep_every == 0 and distributed.is_main_process():
            atomic_write_bytes(self.path.with_name(KEPT_CHECKPOINT.format(step=step)), self.path.read_bytes())

    def after_epoch(self) -> None:
        self._save()


class LossLogHook(HookBase):
    """Every `every` steps: loss terms averaged over ranks, learning rate and throughput.

    Writes one JSON object per logged step to ``losses.jsonl`` and the same scalars to TensorBoard.
    This is the loop's only host synchronisation.
    """

    def __init__(self, out_dir: Path, every: int):
        self.out_dir = out_dir
        self.every = every
        self.writer = None
        self._clock = None
        self._objects = 0

    def before_train(self) -> None:
        if distributed.is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            drop_records_after(self.out_dir / LOSS_LOG, self.trainer.step)
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.trainer.step + 1)
        self._clock = time.perf_counter()

    def after_step(self, result) -> None:
        self._objects += result.objects
        step = self.trainer.step
        if step % self.every and step != self.trainer.max_steps:
            return
        names = sorted(result.losses)
        stacked = distributed.all_reduce_mean(torch.stack([result.losses[name].float() for name in names]))
        values = dict(zip(names, stacked.cpu().tolist()))
        now = time.perf_counter()
        record = {
            "step": step,
            "epoch": result.epoch,
            "lr": self.trainer.scheduler.get_last_lr()[0],
            "objects_per_s": self._objects / max(now - self._clock, 1e-9),
            **{f"loss/{name}": value for name, value in values.items()},
        }
        self._clock, self._objects = now, 0
        if not distributed.is_main_process():
            return
        with open(self.out_dir / LOSS_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(key, value, step)
        logger.info(
            "step %d  loss %.5f  lr %.2e  %.1f obj/s", step, values["total"], record["lr"], record["objects_per_s"]
        )

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressHook(HookBase):
    """A tqdm bar over the steps (rank 0, unless quiet), labelled ``desc``."""

    def __init__(self, quiet: bool, desc: str = "train"):
        self.quiet = quiet
        self.desc = desc
        self.bar = None

    def before_train(self) -> None:
        if distributed.is_main_process() and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=self.trainer.max_steps, initial=self.trainer.step, desc=self.desc, unit="step")

    def after_step(self, result) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SkipReportHook(HookBase):
    """Logs, at each epoch end, the samples the datasets skipped or redrew (and why)."""

    def before_epoch(self) -> None:
        for dataset in self.trainer.datasets:
            dataset.skips.reset()

    def after_epoch(self) -> None:
        counts = {}
        for dataset in self.trainer.datasets:
            for reason, count in dataset.skips.counts().items():
                counts[reason] = counts.get(reason, 0) + count
        if distributed.is_main_process():
            total = sum(counts.values())
            summary = ", ".join(f"{reason} {count}" for reason, count in counts.items() if count) or "none"
            logger.info("epoch %d: %d skipped samples (%s)", self.trainer.epoch - 1, total, summary)


class LossCurveHook(HookBase):
    """Plots ``losses.jsonl`` as ``loss_curve.png`` at the end of training (rank 0)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def after_train(self) -> None:
        if distributed.is_main_process():
            plot_loss_curve(self.out_dir / LOSS_LOG, self.out_dir / "loss_curve.png")


class ValidationHook(HookBase):
    """Every ``run.validate_every`` steps and at the last step: the official APs on a held-out split.

    Rank 0 validates while the other ranks wait at a barrier. The ``data.val_max_images`` images of
    ``data.val_split`` (evenly spaced, `evenly_spaced`) are read at the first validation and kept in memory.
    The network runs in eval mode (autocast as ``run.precision``) through the test path, `predict_items`,
    with the run's seed as ``cleanpose test`` does, and `evaluate_results` scores the results. Each validation
    appends ``{"step", "epoch", <the seven mean APs: iou25 … 10deg5cm, null when undefined>, "images",
    "objects", "seconds"}`` to ``metrics.jsonl``, writes the APs to TensorBoard (``tensorboard/val``, tags
    ``val/<key>``) and, when ``run.best_metric`` beats every earlier value, writes the training checkpoint
    ``checkpoints/best.pt``. The best value and its step are the hook's state (kept by checkpoints), so a
    resumed run keeps them; it must run before `CheckpointHook`, whose checkpoint of the same step then
    holds this validation.

    Args:
        config: the run's config.
        out_dir: run folder (``metrics.jsonl``, ``tensorboard/val``, ``metrics_curve.png``).
        best_path: where the best checkpoint goes.
    """

    def __init__(self, config, out_dir: Path, best_path: Path):
        self.config = config
        self.out_dir = out_dir
        self.best_path = best_path
        self.best = {"value": None, "step": None}
        self.items = None
        self.writer = None

    def state_dict(self) -> dict:
        return {"best_metric": self.config.run.best_metric, **self.best}

    def load_state_dict(self, state: dict) -> None:
        if state.get("best_metric") == self.config.run.best_metric:
            self.best = {"value": state["value"], "step": state["step"]}

    def before_train(self) -> None:
        if distributed.is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            drop_records_after(self.out_dir / METRIC_LOG, self.trainer.step)
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard" / "val"), purge_step=self.trainer.step + 1)

    def after_step(self, result) -> None:
        step = self.trainer.step
        if step % self.config.run.validate_every and step != self.trainer.max_steps:
            return
        if distributed.is_main_process():
            self._validate(step, result.epoch)
        distributed.barrier()

    def _load_items(self) -> list[dict]:
        data = self.config.data
        root = data.val_root or data.root
        dataset = build_run_test_dataset(self.config, data.val_masks, root=root, split=data.val_split)
        return load_items(dataset, evenly_spaced(len(dataset), data.val_max_images), workers=data.workers)

    def _validate(self, step: int, epoch: int) -> None:
        start = time.perf_counter()
        if self.items is None:
            self.items = self._load_items()
            logger.info("validation set: %d images of %s", len(self.items), self.config.data.val_split)
        means = self._mean_aps()
        record = {
            "step": step, "epoch": epoch, **means, "images": len(self.items),
            "objects": sum(item["pts"].shape[0] for item in self.items), "seconds": time.perf_counter() - start,
        }  # fmt: skip
        with open(self.out_dir / METRIC_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in means.items():
            if value is not None:
                self.writer.add_scalar(f"val/{key}", value, step)
        self.writer.flush()
        self._keep_best(step, means[self.config.run.best_metric])
        logger.info("validation at step %d: %s (%d objects, %.1f s); best %s %s at step %s", step,
                    "  ".join(f"{name} {_percent(ap)}" for name, ap in means.items()), record["objects"],
                    record["seconds"], self.config.run.best_metric, _percent(self.best["value"]),
                    self.best["step"])  # fmt: skip

    def _mean_aps(self) -> dict[str, float | None]:
        """The seven mean APs of the network on the validation items (None: undefined)."""
        trainer, network = self.trainer, self.trainer.network
        was_training = network.training
        network.eval()
        bf16 = self.config.run.precision == "bf16"
        with torch.autocast(device_type=trainer.device.type, dtype=torch.bfloat16, enabled=bf16):
            predictions = predict_items(network, self.items, device=trainer.device, seed=self.config.run.seed)
            results = [result for _, result in predictions]
        network.train(was_training)
        return metrics_to_json(evaluate_results(results, self.config.data.format))["mean"]

    def _keep_best(self, step: int, value: float | None) -> None:
        """Write best.pt when `value` beats every earlier validation."""
        if value is None or (self.best["value"] is not None and value <= self.best["value"]):
            return
        self.best = {"value": value, "step": step}
        trainer = self.trainer
        save_training_state(
            self.best_path,
            trainer.network,
            trainer.optimizer,
            trainer.scheduler,
            step,
            self.config,
            hooks=trainer.hook_state(),
        )

    def after_train(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        log = self.out_dir / METRIC_LOG
        if log.exists():
            plot_metric_curve(log, self.out_dir / "metrics_curve.png", self.config.run.best_metric)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def read_loss_log(path: Path) -> list[dict]:
    """The records of a JSON-lines log (``losses.jsonl``, ``metrics.jsonl``), in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def drop_records_after(path: Path, step: int) -> None:
    """On resume, forget what a killed run logged after its last checkpoint (those steps run again)."""
    if not path.exists():
        return
    kept = [record for record in read_loss_log(path) if record["step"] <= step]
    atomic_write_bytes(path, "".join(json.dumps(record) + "\n" for record in kept).encode())


def plot_loss_curve(log_path: Path, png_path: Path) -> None:
    """Total and per-term training losses against the step, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_loss_log(log_path)
    steps = [record["step"] for record in records]
    figure, axis = plt.subplots(figsize=(8, 5))
    for key in sorted(key for key in records[0] if key.startswith("loss/")):
        axis.plot(steps, [record[key] for record in records], label=key[5:], linewidth=2 if key == "loss/total" else 1)
    axis.set_xlabel("step")
    axis.set_ylabel("loss (unweighted terms; total weighted)")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def plot_metric_curve(log_path: Path, png_path: Path, best_metric: str) -> None:
    """The seven validation mean APs of ``metrics.jsonl`` against the step (the best metric drawn thicker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_loss_log(log_path)
    steps = [record["step"] for record in records]
    figure, axis = plt.subplots(figsize=(8, 5))
    for key in [*HEADLINE_IOU_KEYS, *HEADLINE_POSE_KEYS]:
        values = [float("nan") if record[key] is None else record[key] for record in records]
        axis.plot(steps, values, marker="o", markersize=3, label=key, linewidth=2.5 if key == best_metric else 1)
    axis.set_xlabel("step")
    axis.set_ylabel("validation AP, mean over classes (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def default_hooks(config, checkpoint_path: Path, *, quiet: bool) -> list[HookBase]:
    """The hooks of a training run, in call order (validation before the checkpoint of the same step)."""
    out_dir = Path(config.run.out_dir)
    validation = []
    if config.run.validate_every:
        validation = [ValidationHook(config, out_dir, checkpoint_path.parent / BEST_CHECKPOINT)]
    return [
        LossLogHook(out_dir, config.run.log_every),
        *validation,
        CheckpointHook(checkpoint_path, config.run.checkpoint_every, config.run.keep_every),
        SkipReportHook(),
        ProgressHook(quiet),
        LossCurveHook(out_dir),
    ]
