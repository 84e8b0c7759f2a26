"""SIGTERM (preemption, `scancel`, a container stop) and SIGINT (Ctrl-C): save a checkpoint, then exit.

Lightning's own SIGTERM handling exits without a checkpoint, and Python turns Ctrl-C into a
KeyboardInterrupt wherever the process happens to be, possibly between a parameter update and the
optimizer's state update. Here a signal only sets a flag; the current step (and a validation that
follows it) finishes, all ranks agree to stop before the next one, a checkpoint is written, and the
process exits with 128 + the signal number
(the shell's convention for "ended by this signal"). SIGUSR1 is left to Lightning's SLURM requeue
handler. A second Ctrl-C stops at once.
"""

import signal
import threading
from pathlib import Path
from types import FrameType

import lightning as L

from chainrule.core import console, stop_signals
from chainrule.core.log_steps import saving_between_batches

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; the exit status is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class SignalCheckpoint(L.Callback):
    """On SIGTERM or SIGINT, writes `<dirpath>/<filename>.ckpt` after the current training step and exits.

    A resume (`chainrule-train resume=<run dir>`, or the same run dir reused by a requeued job) continues
    from it exactly.
    """

    def __init__(self, dirpath: str, filename: str):
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.received: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its own handlers, so these replace them; Lightning
        # puts the original handlers back when fitting ends.
        self.received = None
        stop_signals.forget()
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: the user does not want to wait for the step to end
        self.received = signum
        stop_signals.note(signum)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:
        # Checked between batches, not at a batch's end: by now the previous step's metrics (and an
        # epoch's validation) are logged, so the checkpoint holds the run's whole history up to it.
        stop = self.received is not None
        if trainer.world_size > 1:  # a signal may reach the ranks in different steps: stop together
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            with saving_between_batches(trainer):
                self._save_and_exit(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.received is not None:  # during the last step: training is complete, but stop as asked
            self._save_and_exit(trainer)

    def _save_and_exit(self, trainer: L.Trainer) -> None:
        signum = self.received or signal.SIGTERM
        path = self.dirpath / f"{self.filename}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        console.say(f"{signal.Signals(signum).name} received: saved {path} at step {trainer.global_step}; "
                    f"continue with: chainrule-train resume={trainer.default_root_dir}")
        raise Interrupted(signum)
