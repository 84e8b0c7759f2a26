"""A callback that writes the wall-clock time at which the first optimizer step ended (benchmarks/startup.py)."""

import os
import time

import lightning as L


class FirstStepMarker(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == 1:
            with open(os.environ["FIRST_STEP_STAMP"], "w") as f:
                f.write(repr(time.time()))
