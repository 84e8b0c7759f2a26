"""How a callback writes metrics: to every logger of the trainer, on the step axis Lightning's own
`LightningModule.log` and LearningRateMonitor write on, so that a callback's values share rows (CSV) and
steps (W&B, TensorBoard, MLflow) with the loss of the same batch.

Callbacks log here directly instead of through `LightningModule.log`, which costs about a millisecond a
call in Lightning's result bookkeeping.
"""

from collections.abc import Mapping
from typing import Any

import lightning as L

from chainrule.core.log_steps import logging_step


def log_to_loggers(trainer: L.Trainer, metrics: Mapping[str, Any], loggers: list | None = None) -> None:
    """Write `metrics` to `loggers` (default: all of the trainer's) at `logging_step(trainer)`."""
    step = logging_step(trainer)
    for logger in trainer.loggers if loggers is None else loggers:
        logger.log_metrics(dict(metrics), step=step)
