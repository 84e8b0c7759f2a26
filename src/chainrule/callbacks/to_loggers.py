"""How a callback writes metrics: to every logger of the trainer, on the step axis Lightning's own
`LightningModule.log` and LearningRateMonitor write on, so that a callback's values share rows (CSV) and
steps (W&B, TensorBoard, MLflow) with the loss of the same batch.

Callbacks log here directly instead of through `LightningModule.log`, which costs about a millisecond a
call in Lightning's result bookkeeping.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L

from chainrule.core.log_steps import logging_step


def log_to_loggers(trainer: L.Trainer, metrics: Mapping[str, Any], loggers: list | None = None) -> None:
    """Write `metrics` to `loggers` (default: all of the trainer's) at `logging_step(trainer)`."""
    step = logging_step(trainer)
    for logger in trainer.loggers if loggers is None else loggers:
        logger.log_metrics(dict(metrics), step=step)


@contextmanager
def saving_between_batches(trainer: L.Trainer) -> Iterator[None]:
    """Keep the step axis right across a checkpoint written at the start of a batch.

    Lightning's restore assumes a mid-epoch checkpoint was written at the end of the previous batch,
    before the count above advanced for it, and advances it once more when restoring. A checkpoint
    written at the start of the next batch (chainrule's, once everything of the previous step is logged)
    is saved with the count one lower, so the restored run logs on the same steps as an uninterrupted one.
    """
    loop = trainer.fit_loop.epoch_loop
    loop._batches_that_stepped -= 1
    try:
        yield
    finally:
        loop._batches_that_stepped += 1
