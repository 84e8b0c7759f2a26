"""Continuing a run: `resume=<run dir>` on the command line, or a run directory reused by a requeued job.

A run directory is resumed in place: the same config (the run's own overrides, saved by Hydra in
`.hydra/overrides.yaml`), the same directory (so loggers continue the same files and run ids), and the
newest intact checkpoint in it. A run whose training finished is not trained again.
"""

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from chainrule.checkpointing.discovery import (
    checkpoint_candidates,
    newest_intact_checkpoint,
    remove_stale_temporaries,
)
from chainrule.checkpointing.io import is_intact
from chainrule.core import console
from chainrule.core.errors import CheckpointError

log = logging.getLogger(__name__)

FINISHED = "finished.json"


def fit(
    trainer: L.Trainer, task: L.LightningModule, datamodule: L.LightningDataModule, cfg: DictConfig
) -> None:
    """`trainer.fit`, continuing the run directory's own training from its newest intact checkpoint if it
    has one. A run that finished training continues only as far as a larger trainer.max_epochs or
    max_steps asks; otherwise Lightning ends at once."""
    run_dir = cfg.paths.output_dir
    with warnings.catch_warnings():
        if type(datamodule).load_state_dict is not L.LightningDataModule.load_state_dict:
            # The data module restores its position in the epoch itself (chainrule.data.resumable);
            # Lightning, looking only for stateful dataloaders, would warn that it cannot.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        trainer.fit(task, datamodule=datamodule, ckpt_path=checkpoint_to_resume(cfg))
    if trainer.state.status == TrainerStatus.FINISHED:
        mark_finished(run_dir, best_checkpoint(trainer, run_dir), trainer.global_step, stop_reason(trainer))


def stop_reason(trainer: L.Trainer) -> str:
    """Why training ended, in words: early stopping (which metric, at which epoch), or the limit reached."""
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
            return (f"early stopping at epoch {callback.stopped_epoch}: {callback.stopping_reason_message} "
                    f"(callbacks.early_stopping; null turns it off)")
    if trainer.max_steps not in (-1, None) and trainer.global_step >= trainer.max_steps:
        return f"reached trainer.max_steps={trainer.max_steps} (epoch {trainer.current_epoch})"
    if trainer.max_epochs not in (-1, None) and trainer.current_epoch >= trainer.max_epochs:
        return f"reached trainer.max_epochs={trainer.max_epochs} ({trainer.global_step} steps)"
    if trainer.should_stop:
        return f"stopped by a callback at epoch {trainer.current_epoch}"
    return f"ended at epoch {trainer.current_epoch}, step {trainer.global_step}"


def best_checkpoint(trainer: L.Trainer, run_dir: str | Path) -> str | None:
    """The best checkpoint of this fit, or the one recorded when the run directory finished training."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "best_model_path", ""):
            return callback.best_model_path
    record = finished(run_dir)
    return str(Path(run_dir) / record["best_checkpoint"]) if record and record.get("best_checkpoint") else None


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """The checkpoint `trainer.fit` should start from: the newest intact one in this run directory (a
    requeued or resumed run), else `ckpt_path`, else None (a fresh start)."""
    run_dir = Path(cfg.paths.output_dir)
    _remove_temporaries(run_dir)
    newest = newest_intact_checkpoint(run_dir)
    if newest is not None:
        log.info(f"resuming from {newest}")
        return str(newest)
    if checkpoint_candidates(run_dir):
        console.warn(f"no intact checkpoint in {run_dir}; training starts again from step 0")
    elif cfg.get("resume"):
        console.warn(f"resume={cfg.resume}: the run saved no checkpoint yet; training starts from step 0")
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise CheckpointError(
                f"ckpt_path={cfg.ckpt_path}: checkpoint not found; pass the path of a "
                f".ckpt file, e.g. <run dir>/checkpoints/last.ckpt"
            )
        if not is_intact(path):
            raise CheckpointError(
                f"ckpt_path={cfg.ckpt_path}: the checkpoint is damaged (truncated or "
                f"corrupt); pick another one from its run's checkpoints/ folder"
            )
        return str(path)
    return None


@rank_zero_only
def _remove_temporaries(run_dir: Path) -> None:
    remove_stale_temporaries(run_dir)


def finished(run_dir: str | Path) -> dict[str, Any] | None:
    """What a run that finished training recorded (its best checkpoint, relative to the run directory),
    or None if it did not finish."""
    path = Path(run_dir) / FINISHED
    return json.loads(path.read_text()) if path.is_file() else None


@rank_zero_only
def mark_finished(run_dir: str | Path, best_checkpoint: str | None, global_step: int, reason: str) -> None:
    """Record that training completed. Paths are relative to the run directory: a moved or copied run
    directory points at its own files."""
    run_dir = Path(run_dir)
    best = os.path.relpath(best_checkpoint, run_dir) if best_checkpoint else None
    path = run_dir / FINISHED
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps({"best_checkpoint": best, "global_step": global_step, "stopped": reason}) + "\n")
    temporary.replace(path)
