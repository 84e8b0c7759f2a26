"""The terminal's progress bar reads the logged values after the steps that logged them only: reading a
value (`.item()`) waits for the device, which after every step would keep the host from running ahead."""

from typing import Any

import lightning as L
import torch
from torch import nn

from chainrule.callbacks.progress import LoggedValuesBar
from chainrule.core.log_steps import writes_step_logs


class CountingModule(L.LightningModule):
    """Logs the number of steps taken so far on the steps whose logs Lightning writes, as Task does."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if writes_step_logs(self.trainer):
            self.log("taken", float(self.global_step), on_step=True, prog_bar=True)
        return self.layer(batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class RecordingBar(LoggedValuesBar):
    """The bar under test, recording what it shows after each training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple[int, Any]] = []
        self.reads = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.shown.append((trainer.global_step, (self._shown or {}).get("taken")))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        before = self._shown
        shown = super().get_metrics(trainer, pl_module)
        self.reads += shown is not before
        return shown


def test_the_bar_reads_values_only_after_logging_steps_and_shows_the_last_logged(tmp_path) -> None:
    bar = RecordingBar()
    trainer = L.Trainer(max_steps=10, log_every_n_steps=3, callbacks=[bar], logger=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(CountingModule(), train_dataloaders=torch.utils.data.DataLoader(torch.randn(20, 2), batch_size=2))
    # Steps 3, 6 and 9 (after their optimizer step) logged the steps taken before them: 2, 5 and 8.
    expected = [(step, None if step < 3 else float(step - 1 - (step % 3))) for step in range(1, 11)]
    assert bar.shown == expected
    assert bar.reads <= 3 + 2 + 1  # the first step, each logging step, and the epoch's end
