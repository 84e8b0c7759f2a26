"""A test-only callback that holds a training process at an exact point, so that a test can deliver a real
signal (SIGKILL, SIGTERM, SIGINT) there. `chainrule-train` subprocesses import it through PYTHONPATH."""

import signal
import time
from pathlib import Path

import lightning as L

from chainrule.core import stop_signals

STOPS = (signal.SIGTERM, signal.SIGINT)

HOOKS = ("train_batch_start", "before_optimizer_step", "train_batch_end", "validation_batch_start",
         "save_checkpoint", "fit_end", "test_batch_start", "train_start")


class PauseAt(L.Callback):
    """At `hook` of optimizer step `step` (0-based), create `marker`, then sleep for `seconds` or until a
    stop signal (SIGTERM, SIGINT) arrives.

    Once only: when `marker` exists already (in the resumed run), it does nothing. Checkpoint callbacks
    run after all others, so at `train_batch_end` the step's own checkpoint is not written yet.

    Rank 0 only, the process that tests signal: the other ranks wait for it at their next collective. Were
    every rank to race for the one marker, a rank other than 0 could hold while rank 0 had already voted
    "go on" in the ranks' stop agreement, and a SIGTERM sent then would stop the run one step late.
    """

    def __init__(self, step: int, hook: str, marker: str, seconds: float = 600.0):
        assert hook in HOOKS, hook
        self.step, self.hook, self.marker, self.seconds = step, hook, Path(marker), seconds

    def _pause(self, trainer: L.Trainer, hook: str, step: int) -> None:
        if trainer.global_rank != 0 or hook != self.hook or step != self.step or self.marker.exists():
            return
        self.marker.write_text(f"{hook} {step}\n")
        deadline = time.monotonic() + self.seconds
        # Short sleeps: signal handlers run in between. A stop signal ends the hold at once, so a test
        # that signals the held process may hold it long and no slow machine makes the signal late.
        while time.monotonic() < deadline and not any(map(stop_signals.received, STOPS)):
            time.sleep(0.02)

    def on_train_start(self, trainer, pl_module):  # a resumed run: restored, before its first batch
        self._pause(trainer, "train_start", trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._pause(trainer, "train_batch_start", trainer.global_step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._pause(trainer, "before_optimizer_step", trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # The update of this step is counted already.
        self._pause(trainer, "train_batch_end", trainer.global_step - 1)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._pause(trainer, "validation_batch_start", trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Marks the start of a write and lets it go on: with a slow writer (trainer.plugins.0.write_delay_s)
        # a kill soon after lands in the middle of the write.
        if (trainer.global_rank == 0 and self.hook == "save_checkpoint" and trainer.global_step == self.step
                and not self.marker.exists()):
            self.marker.write_text(f"save_checkpoint {trainer.global_step}\n")

    def on_fit_end(self, trainer, pl_module):  # after the last checkpoint: plots and the record are next
        self._pause(trainer, "fit_end", trainer.global_step)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._pause(trainer, "test_batch_start", trainer.global_step)
