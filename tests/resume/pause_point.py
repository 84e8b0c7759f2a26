"""A test-only callback that stops a training process at an exact point, so that a test can deliver a real
signal (SIGKILL, SIGTERM, SIGINT) there. Imported by `chainrule-train` subprocesses through PYTHONPATH."""

import time
from pathlib import Path

import lightning as L

HOOKS = ("train_batch_start", "before_optimizer_step", "train_batch_end", "validation_batch_start")


class PauseAt(L.Callback):
    """At `hook` of optimizer step `step` (the step's 0-based index), create `marker` and sleep for
    `seconds`. Once only: when `marker` exists already (a resumed run), it does nothing."""

    def __init__(self, step: int, hook: str, marker: str, seconds: float = 600.0):
        assert hook in HOOKS, hook
        self.step, self.hook, self.marker, self.seconds = step, hook, Path(marker), seconds

    def _maybe_pause(self, trainer: L.Trainer, hook: str) -> None:
        if hook != self.hook or trainer.global_step != self.step or self.marker.exists():
            return
        self.marker.write_text(f"{hook} {trainer.global_step}\n")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._maybe_pause(trainer, "train_batch_start")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._maybe_pause(trainer, "before_optimizer_step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # global_step counts this batch's update already; name the step by its index.
        if self.hook == "train_batch_end" and trainer.global_step - 1 == self.step and not self.marker.exists():
            self.marker.write_text(f"train_batch_end {self.step}\n")
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                time.sleep(0.02)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._maybe_pause(trainer, "validation_batch_start")
