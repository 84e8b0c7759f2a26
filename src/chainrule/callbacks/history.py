"""Every logger's history continues across resumes, as if the run had never stopped.

A checkpoint at step N is written once everything of the steps before N is logged
(chainrule.callbacks.checkpoints); here the loggers are flushed into it, and on resume the loggers that
can (CSV, TensorBoard, MLflow) drop what they recorded at step N or later: the resumed run logs those
steps again; a start without a checkpoint drops everything. W&B keeps its own history by run id and ignores steps it has seen.
"""

from typing import Any

import lightning as L


class LoggerHistory(L.Callback):
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            logger.save()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The step the resumed run logs its first batch at: the optimizer steps taken (Lightning brings its
        # own step count in line only when the epoch starts, after this hook). A start without a checkpoint
        # in a run directory that has a history (an earlier start was killed before its first checkpoint
        # was written) trains from step 0 again: what that start logged goes.
        step = trainer.global_step if trainer.ckpt_path is not None else 0
        for logger in trainer.loggers:
            rewind = getattr(logger, "rewind", None)
            if rewind is not None:
                rewind(step)
