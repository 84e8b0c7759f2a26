"""The position reached in the training order, saved with every checkpoint so a resumed run continues it.

PyTorch's default shuffling draws each epoch's order from the global RNG when the loader is iterated,
and Lightning restarts an interrupted epoch from its first batch. Both make a resumed run see other
samples than an uninterrupted one. chainrule's training order is a pure function of (seed, epoch)
(chainrule.data.sampling.GlobalBatchSampler); the position saved here lets the first pass after a
restore skip the micro-batches already trained on.
"""

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn


def training_position(trainer: "L.Trainer | None") -> dict[str, int]:
    """Where the training data order continues after the last finished batch: the epoch, and the number of
    that epoch's batches already trained on. Meant to be called while a checkpoint is being written."""
    if trainer is None or trainer.state.fn != TrainerFn.FITTING:
        return {}
    epoch_loop = trainer.fit_loop.epoch_loop
    done = epoch_loop.batch_progress.current.processed
    if done >= trainer.num_training_batches:  # the epoch's last batch: the next one starts a new epoch
        return {"epoch": trainer.current_epoch + 1, "batches": 0}
    return {"epoch": trainer.current_epoch, "batches": done}


def is_position(state: Any) -> bool:
    return isinstance(state, dict) and {"epoch", "batches"} <= state.keys()
