"""The step axis of logs: which step a training batch's metrics are written at, and whether Lightning
writes this batch's step metrics at all. One place reads Lightning's private counter."""

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L


def logging_step(trainer: L.Trainer) -> int:
    """The step the current training batch logs at: the number of optimizer steps taken before it.

    Lightning keeps this count as `_batches_that_stepped` (restored on resume; it advances after the
    batch's `on_train_batch_end`); `global_step` already counts the batch's own optimizer step by then.
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def writes_step_logs(trainer: L.Trainer) -> bool:
    """Whether the current training batch's step metrics reach the loggers: every
    `trainer.log_every_n_steps` optimizer steps, as Lightning writes them. Values that only a log shows
    are computed, synced and moved to the host on these steps alone.

    Decided by the step count alone, so every rank agrees (a synced log is a collective); Lightning also
    writes on the step a stop was requested, where a rank may learn of the stop a step later than another.
    """
    return (logging_step(trainer) + 1) % trainer.log_every_n_steps == 0


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
