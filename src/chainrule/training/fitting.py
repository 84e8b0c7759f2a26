"""Continuing a run: `resume=<run dir>` on the command line, or a run directory reused by a requeued job.

A run directory is resumed in place: the same config (the run's own overrides, saved by Hydra in
`.hydra/overrides.yaml`), the same directory (so loggers continue the same files and run ids), and the
newest intact checkpoint in it. A run whose training finished trains on only when asked for more
epochs or steps.
"""

import logging
import signal
import warnings
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from chainrule.checkpointing.discovery import (
    checkpoint_candidates,
    checkpoint_to_use,
    finished,
    mark_finished,
    newest_intact_checkpoint,
    remove_stale_temporaries,
)
from chainrule.core import console, stop_signals, training_length

log = logging.getLogger(__name__)



def fit(
    trainer: L.Trainer, task: L.LightningModule, datamodule: L.LightningDataModule, cfg: DictConfig
) -> None:
    """`trainer.fit`, continuing the run directory's own training from its newest intact checkpoint if it
    has one. A run that finished training continues only when a continuation changes how long it is asked
    to train (core.training_length); otherwise it ends at once."""
    run_dir = cfg.paths.output_dir
    record, limits = finished(run_dir), training_limits(cfg)
    if record is not None and record.get("limits") == limits:
        # Lightning restores early stopping's count but not its decision to stop: a run that early stopping
        # ended would train one more epoch at every resume. Its own last step ends it at once instead.
        trainer.fit_loop.epoch_loop.max_steps = record["global_step"]
    with warnings.catch_warnings():
        if type(datamodule).load_state_dict is not L.LightningDataModule.load_state_dict:
            # The data module restores its position in the epoch itself (chainrule.data.resumable);
            # Lightning, looking only for stateful dataloaders, would warn that it cannot.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=checkpoint_to_resume(cfg))
        except BaseException as error:
            # Lightning's own handler (SLURM runs without chainrule's signal callback) or chainrule's
            if not (trainer.received_sigterm or stop_signals.received(signal.SIGTERM)):
                raise
            stopped_by_sigterm(trainer, run_dir, error)
    if record is not None and record.get("global_step") == trainer.global_step:  # its record stays as it is
        console.say(f"training of {run_dir} finished already ({record.get('stopped')}); change "
                    f"{training_length.in_words()} to train it further")
    elif trainer.state.status == TrainerStatus.FINISHED and trainer.is_global_zero:
        mark_finished(run_dir, best_checkpoint(trainer, run_dir), trainer.global_step, stop_reason(trainer),
                      limits)


def training_limits(cfg: DictConfig) -> dict[str, Any]:
    """How long this run is asked to train (core.training_length): a finished run trains on only when a
    continuation changes one of these."""
    return {key: OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
            for key in training_length.TRAINING_LIMITS for value in [OmegaConf.select(cfg, key)]}


def stopped_by_sigterm(trainer: L.Trainer, run_dir: str | Path, error: BaseException) -> NoReturn:
    """End a run that SIGTERM stopped with one line, not a traceback. SLURM sends it to every process of a
    job it requeues (after Lightning's USR1 checkpoint), cancels or preempts; W&B's service process stops
    with it, so the training loop may fail on its next log call before it gets to stop in order."""
    code = 128 + signal.SIGTERM
    if not (isinstance(error, SystemExit) and error.code == code):  # else the signal callback has said so
        console.say(f"stopped by SIGTERM at step {trainer.global_step} (SLURM requeued, preempted or cancelled "
                    f"the job, or it was killed); its checkpoints are kept: chainrule-train resume={run_dir}")
    raise SystemExit(code) from None


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
        console.say(f"resuming from {newest}")
        return str(newest)
    if checkpoint_candidates(run_dir):
        console.warn(f"no intact checkpoint in {run_dir}; training starts again from step 0")
    elif cfg.get("resume"):
        console.warn(f"resume={cfg.resume}: the run saved no checkpoint yet; training starts from step 0")
    if cfg.get("ckpt_path"):
        return str(checkpoint_to_use(cfg.ckpt_path, cfg.paths.log_dir))
    return None


@rank_zero_only
def _remove_temporaries(run_dir: Path) -> None:
    remove_stale_temporaries(run_dir)
