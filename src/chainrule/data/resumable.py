"""The training sample order as a pure function of (seed, epoch), so that a resumed run continues it exactly.

PyTorch's default shuffling draws each epoch's order from the global RNG when the loader is iterated,
and Lightning restarts an interrupted epoch from its first batch. Both make a resumed run see other
samples than an uninterrupted one. Here the order of epoch e is `randperm(n, seed + e)` (the order
`DistributedSampler` uses, so Lightning leaves the sampler alone under DDP), and the position reached
is saved with every checkpoint; the first pass after a restore skips the samples already trained on.
"""

import itertools
from collections.abc import Iterator, Sized
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (this rank's share of a per-epoch permutation) that can start mid-epoch.

    `len()` stays the full epoch: Lightning counts the batches already done itself.
    """

    def __init__(
        self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self._skip = 0

    def resume_at(self, position: dict[str, int], batch_size: int) -> None:
        """Make the next pass run epoch `position["epoch"]` from its batch `position["batches"]`
        (batches of `batch_size` samples of this rank)."""
        self.set_epoch(position["epoch"])
        self._skip = position["batches"] * batch_size

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return itertools.islice(super().__iter__(), skip, None)


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
