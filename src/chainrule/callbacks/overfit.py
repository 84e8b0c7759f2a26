"""The verdict of an overfit-one-batch run: a model that cannot memorize one batch has a bug (wrong
loss/target wiring, a frozen or disconnected layer, a learning rate far off) that more data will not fix."""

import logging
import math
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


class OverfitCheck(L.Callback):
    """Reports at the end of training whether the training loss fell below `threshold`.

    Meant for `debug=overfit_batch` (Lightning's `overfit_batches=1`); the loss is the one the training
    step returned at the last optimizer step.
    """

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold
        self.first_loss: float | None = None
        self.last_loss: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.last_loss = loss.detach()  # kept on the device: no sync per step
        if self.first_loss is None:
            self.first_loss = float(self.last_loss)

    @property
    def reached(self) -> bool:
        return self.last_loss is not None and float(self.last_loss) < self.threshold

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.last_loss is None:
            return
        last = float(self.last_loss)
        if self.reached:
            log.info(f"overfit check passed: the training loss on one batch fell from {self.first_loss:.4g} "
                     f"to {last:.4g} (< {self.threshold:g}) in {trainer.global_step} steps")
        else:
            why = "became non-finite" if not math.isfinite(last) else f"is still {last:.4g}"
            log.warning(
                f"overfit check FAILED: after {trainer.global_step} steps on one batch the training loss "
                f"{why} (started at {self.first_loss:.4g}, target < {self.threshold:g}); check that the loss "
                f"receives the right targets, that every layer gets gradients (chainrule-gradcheck), and the "
                f"learning rate (tune=lr_find), or train longer (trainer.max_epochs)"
            )
