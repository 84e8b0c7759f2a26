"""Every checkpoint a run writes during training, in one callback.

Files in `dirpath` (`paths.checkpoint_dir`):
- `last.ckpt`: the newest state, rewritten at every save and when training ends;
- `step<N>.ckpt`: every `every_n_train_steps` optimizer steps and/or every `every_n_seconds` of
  training, the newest `keep_step_checkpoints` kept, so a run can resume mid-epoch and a damaged
  newest file still leaves one;
- `epoch<E>-step<N>.ckpt`: after each validation, the best `save_top_k` by `monitor` (`mode`).

A save is due after a step, a validation or an epoch, and is made between batches: at the start of the
next batch or when training ends. By then the previous step's metrics and the epoch's validation and
epoch-end metrics are all logged, so a checkpoint at step N holds a run whose history is complete up to
step N (chainrule.callbacks.history rewinds the loggers to it on resume). Lightning's ModelCheckpoint
saves inside `on_train_batch_end` and `on_validation_end`, before those metrics are logged; a kill
right after such a save loses them for good. One state is written once; its other names are hard
links (under trainer=fsdp a checkpoint is a folder: chainrule.checkpointing.sharded). The file names
in the callback's state are relative to `dirpath`, so a moved or copied run
directory resumes with its own files.
"""

import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

from chainrule.checkpointing import sharded
from chainrule.checkpointing.io import after_checkpoint_writes
from chainrule.core.errors import ConfigError, unknown_choice
from chainrule.core.log_steps import saving_between_batches

MODES = ("min", "max")
LAST = "last.ckpt"


class Checkpoints(Checkpoint):
    """See the module docstring. `monitor` None keeps no best checkpoints (save_top_k is then 0)."""

    def __init__(
        self,
        dirpath: str,
        monitor: str | None,
        mode: str,
        save_top_k: int,
        every_n_train_steps: int | None,
        every_n_seconds: float | None,
        keep_step_checkpoints: int,
    ):
        if mode not in MODES:
            raise unknown_choice("callbacks.checkpoints.mode", mode, list(MODES))
        for key, value in (("save_top_k", save_top_k), ("keep_step_checkpoints", keep_step_checkpoints)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"callbacks.checkpoints.{key} must be a number >= 0, got {value!r}")
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool)
                                                or not isinstance(every_n_train_steps, int)
                                                or every_n_train_steps < 1):
            raise ConfigError(f"callbacks.checkpoints.every_n_train_steps must be a positive number of steps "
                              f"or null, got {every_n_train_steps!r}")
        if every_n_seconds is not None and not every_n_seconds > 0:
            raise ConfigError(f"callbacks.checkpoints.every_n_seconds must be a positive number of seconds or "
                              f"null, got {every_n_seconds!r}")
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k if monitor else 0
        self.every_n_train_steps = every_n_train_steps
        self.every_n_seconds = every_n_seconds
        self.keep_step_checkpoints = keep_step_checkpoints
        self.best: list[tuple[float, str]] = []  # (score, file name), best first
        self.steps: list[str] = []  # step checkpoints, oldest first
        self._due: dict[str, Any] = {}  # "step": True, "validated": (epoch, score), "epoch": True
        self._last_saved_step: int | None = None
        self._stepped_at = 0  # the global step of the last batch seen: no step checkpoint before one
        self._clock = time.monotonic()

    # --- what the rest of chainrule reads -----------------------------------------------------------
    @property
    def best_model_path(self) -> str:
        return str(self.dirpath / self.best[0][1]) if self.best else ""

    @property
    def last_model_path(self) -> str:
        last = self.dirpath / LAST
        return str(last) if last.exists() else ""

    # --- when a save is due -------------------------------------------------------------------------
    def _saving(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._due = {}
        self._last_saved_step = trainer.global_step if trainer.ckpt_path else None
        self._stepped_at = trainer.global_step
        self._clock = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._saving(trainer):
            return
        step = trainer.global_step
        if step == self._stepped_at:  # a batch that accumulated gradients without an optimizer step
            return
        self._stepped_at = step
        by_steps = bool(self.every_n_train_steps) and step % self.every_n_train_steps == 0
        by_time = bool(self.every_n_seconds) and time.monotonic() - self._clock >= self.every_n_seconds
        if self.every_n_seconds and trainer.world_size > 1:  # clocks differ: rank 0 decides for all
            by_time = trainer.strategy.broadcast(by_time)
        if by_steps or by_time:
            self._due["step"] = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._saving(trainer):
            return
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        score = float(value) if value is not None else None
        self._due["validated"] = (trainer.current_epoch, score)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saving(trainer):
            self._due["epoch"] = True

    # --- saving between batches ---------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._due:
            with saving_between_batches(trainer):
                self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saving(trainer) and (self._due or trainer.global_step != self._last_saved_step):
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        due, self._due = self._due, {}
        step = trainer.global_step
        names = [LAST]
        removed: list[str] = []
        if due.get("step"):
            name = f"step{step:06d}.ckpt"
            names.append(name)
            self.steps = [n for n in self.steps if n != name] + [name]
            while len(self.steps) > self.keep_step_checkpoints:
                removed.append(self.steps.pop(0))
        epoch, score = due.get("validated", (None, None))
        if self.save_top_k and score is not None and math.isfinite(score):
            name = f"epoch{epoch:03d}-step{step:06d}.ckpt"
            ranked = sorted([*self.best, (score, name)], key=lambda item: item[0], reverse=self.mode == "max")
            self.best, dropped = ranked[: self.save_top_k], ranked[self.save_top_k:]
            if (score, name) in self.best:
                names.append(name)
            removed += [n for _, n in dropped if n != name]
        # The state saved below already lists the new files: a resume from it knows them.
        first, *others = names
        trainer.save_checkpoint(self.dirpath / first, weights_only=False)
        if trainer.is_global_zero:
            unused = set(removed) - set(names) - {n for _, n in self.best} - set(self.steps)
            # With a background writer, `first` is not written yet: its other names follow the write.
            after_checkpoint_writes(trainer.strategy.checkpoint_io,
                                    partial(_name_and_prune, self.dirpath, first, others, sorted(unused)))
        trainer.strategy.barrier()
        self._last_saved_step = step
        self._clock = time.monotonic()

    # --- resuming -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best": [list(item) for item in self.best], "steps": list(self.steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = [(float(score), str(name)) for score, name in state_dict.get("best", [])]
        self.steps = [str(name) for name in state_dict.get("steps", [])]


def _name_and_prune(dirpath: Path, first: str, others: list[str], unused: list[str]) -> None:
    """Give the checkpoint `first` its other names, then remove the checkpoints no longer kept."""
    for name in others:
        _link_or_copy(dirpath / first, dirpath / name)
    for name in unused:
        sharded.remove(dirpath / name)


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes a second name of `source`'s content, atomically (a hard link; a copy where the
    file system has none)."""
    if source.is_dir():
        return sharded.link_folder(source, target)
    temporary = target.with_name(f".{target.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        import shutil

        shutil.copyfile(source, temporary)
    os.replace(temporary, target)
