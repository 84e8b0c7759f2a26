"""Progress of training: a live bar in a terminal; in a pipe, a log file or a SLURM job's output, a line
of text at a fixed interval and at every epoch's end, to stdout and the run's `train.log`.

A redrawn bar in a file is either absent (rich draws nothing when stdout is not a terminal) or one
frame per redraw; a plain line every `every_s` seconds is what a person tailing a SLURM log wants.
"""

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from chainrule.core import console
from chainrule.core.errors import ConfigError
from chainrule.core.log_steps import writes_step_logs


def progress(every_s: float) -> ProgressBar:
    """The progress display for where stdout goes: a rich bar in a terminal, ProgressLines elsewhere."""
    return LoggedValuesBar() if sys.stdout.isatty() else ProgressLines(every_s)


class LoggedValuesBar(RichProgressBar):
    """Lightning's rich bar, reading the logged values only after the training steps that logged them.

    Lightning's bar reads every value it shows (`.item()`) after every training batch; on a GPU each read
    waits until the device has finished all the work queued so far, which keeps the host from running
    ahead. The values change only on logging steps (chainrule.core.log_steps), so the other steps redraw
    the step count with the values read last."""

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[str, Any] | None = None
        self._reuse_shown = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._reuse_shown = not writes_step_logs(trainer)
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._reuse_shown = False

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        if self._shown is None or not self._reuse_shown:
            self._shown = super().get_metrics(trainer, pl_module)
        return self._shown


class ProgressLines(ProgressBar):
    """A line every `every_s` seconds of training and at each epoch's end: epoch, step/total, loss,
    samples/s and time left. A ProgressBar, so that Lightning adds no bar of its own."""

    def __init__(self, every_s: float):
        super().__init__()
        if not every_s > 0:
            raise ConfigError(f"callbacks.progress.every_s must be a positive number of seconds, got {every_s}")
        self.every_s = every_s
        self._enabled = True
        self._started = self._last = 0.0
        self._first_step = 0
        self._samples = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self._last = time.monotonic()
        self._first_step, self._samples = trainer.global_step, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
        if self._enabled and time.monotonic() - self._last >= self.every_s:
            self._say(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self._say(trainer, validated=True)

    def _say(self, trainer: L.Trainer, validated: bool = False) -> None:
        now = time.monotonic()
        self._last = now
        metrics = trainer.progress_bar_metrics
        total = trainer.estimated_stepping_batches
        step, elapsed = trainer.global_step, now - self._started
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}" if trainer.max_epochs not in (-1, None)
                 else f"epoch {trainer.current_epoch + 1}", f"step {step}/{total}"]
        parts += [f"{name.removesuffix('_step')} {float(value):.4g}" for name, value in metrics.items()
                  if name == "train/loss_step" or (validated and name.startswith("val/"))]
        if elapsed > 0:
            parts.append(f"{self._samples * trainer.world_size / elapsed:,.0f} samples/s")
            done = step - self._first_step
            if 0 < done < total - self._first_step:
                parts.append(f"{_eta(elapsed / done * (total - step))} left")
        console.say("  ".join(parts))


def _eta(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
