"""Training throughput in samples per second, for every logger."""

import time
from collections import deque
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from chainrule.callbacks.to_loggers import log_to_loggers
from chainrule.core.errors import ConfigError


class SamplesPerSecond(L.Callback):
    """Logs `throughput/samples_per_sec`: training samples per second of all ranks together, over the last
    `window_size` batches of the current epoch (time between batch ends, so data loading counts), every
    `trainer.log_every_n_steps` steps.

    Lightning's ThroughputMonitor reports nothing before 100 batches and writes seven keys into the
    `train/` namespace; this is the one number people look at. It goes to the loggers directly: a
    `LightningModule.log` call per step costs about a millisecond. Ranks load equal batches (see
    chainrule.data.batching), so the global rate is rank 0's times the world size.
    """

    def __init__(self, window_size: int):
        if window_size < 2:
            raise ConfigError(f"callbacks.throughput.window_size must be at least 2 batches, "
                              f"got {window_size}")
        self.window_size = window_size
        self._ends: deque[tuple[float, int]] = deque(maxlen=window_size)

    @rank_zero_only
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation and checkpointing between epochs are not training time.
        self._ends.clear()
        self._ends.append((time.perf_counter(), 0))

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._ends:  # resumed mid-epoch: Lightning skips on_train_epoch_start; time from this batch
            self._ends.append((time.perf_counter(), 0))
            return
        samples = self._ends[-1][1] + len(batch[0] if isinstance(batch, list | tuple) else batch)
        self._ends.append((time.perf_counter(), samples))
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0  # not within gradient accumulation
        if not stepped or trainer.global_step % trainer.log_every_n_steps or not trainer.loggers:
            return
        (t0, n0), (t1, n1) = self._ends[0], self._ends[-1]
        log_to_loggers(trainer, {"throughput/samples_per_sec": (n1 - n0) / (t1 - t0) * trainer.world_size})
