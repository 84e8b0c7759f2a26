"""A callback that raises on one rank, for the DDP failure tests (built by the training processes)."""

import os
import time
from pathlib import Path

import lightning as L


class RaiseOnRank(L.Callback):
    """Raises RuntimeError on global rank `rank`: when built (`where=build`, before the ranks meet) or
    at the start of training batch 2 (`where=step`, while the other ranks are in collectives). Writes
    the time of the raise (time.time()) to `stamp` first."""

    def __init__(self, rank: int, where: str, stamp: str):
        self.rank = rank
        self.where = where
        self.stamp = Path(stamp)
        if where == "build" and int(os.environ.get("RANK", 0)) == rank:
            self._raise("before the ranks meet")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        if self.where == "step" and batch_idx == 2 and trainer.global_rank == self.rank:
            self._raise(f"in training step {batch_idx}")

    def _raise(self, when: str) -> None:
        self.stamp.write_text(repr(time.time()))
        raise RuntimeError(f"injected failure on rank {self.rank} {when}")
