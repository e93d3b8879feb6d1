"""Training hooks: checkpoints, loss logs (JSON lines + TensorBoard), progress, skip counts, loss curve.

Each hook sees the trainer (``self.trainer``) and may act before/after training, each epoch and each
step. Only rank 0 writes files or the console; the loss log all-reduces over ranks, so it must run
on every rank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from cleanpose.engine import distributed
from cleanpose.engine.checkpoint import save_training_state
from cleanpose.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

LOSS_LOG = "losses.jsonl"


class HookBase:
    """Does nothing; subclasses override the moments they need."""

    trainer = None

    def before_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_step(self, result) -> None: ...

    def after_epoch(self) -> None: ...

    def after_train(self) -> None: ...


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
    """Writes ``last.pt`` every `every` steps and at each epoch end (rank 0, atomic)."""

    def __init__(self, path: Path, every: int):
        self.path = path
        self.every = every
        self._saved_step = -1

    def _save(self) -> None:
        trainer = self.trainer
        if distributed.is_main_process() and trainer.step != self._saved_step:
            save_training_state(self.path, trainer.network, trainer.optimizer, trainer.scheduler, trainer.step, trainer.config)
            self._saved_step = trainer.step
        distributed.barrier()

    def after_step(self, result) -> None:
        if self.trainer.step % self.every == 0:
            self._save()

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

            self._drop_records_after(self.trainer.step)
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.trainer.step + 1)
        self._clock = time.perf_counter()

    def _drop_records_after(self, step: int) -> None:
        """On resume, forget what a killed run logged after its last checkpoint (those steps run again)."""
        path = self.out_dir / LOSS_LOG
        if not path.exists():
            return
        kept = [record for record in read_loss_log(path) if record["step"] <= step]
        atomic_write_bytes(path, "".join(json.dumps(record) + "\n" for record in kept).encode())

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
        logger.info("step %d  loss %.5f  lr %.2e  %.1f obj/s", step, values["total"], record["lr"], record["objects_per_s"])

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

            self.bar = tqdm(total=self.trainer.max_steps, initial=self.trainer.step, desc=self.desc,
                             unit="step")

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


def read_loss_log(path: Path) -> list[dict]:
    """The records of a ``losses.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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


def default_hooks(config, checkpoint_path: Path, *, quiet: bool) -> list[HookBase]:
    """The hooks of a training run, in call order."""
    out_dir = Path(config.run.out_dir)
    return [
        LossLogHook(out_dir, config.run.log_every),
        CheckpointHook(checkpoint_path, config.run.checkpoint_every),
        SkipReportHook(),
        ProgressHook(quiet),
        LossCurveHook(out_dir),
    ]
