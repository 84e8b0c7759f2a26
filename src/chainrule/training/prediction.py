"""Predictions of a trained model: gathered from every rank in input order, turned into columns (class
probabilities or regression values) and written as a CSV or Parquet table."""

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import Strategy

from chainrule.core.errors import ConfigError, unknown_choice

FORMATS = ("csv", "parquet")


class GatherPredictions(L.Callback):
    """Keeps each predict batch's outputs with the positions of its samples; when prediction ends, gathers
    those of all ranks (each rank predicts a contiguous share: chainrule.data.prediction) and sorts them
    by position, on every rank. Read `positions` and `outputs` (on the CPU) after `trainer.predict`."""

    def __init__(self) -> None:
        self._positions: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self.positions = self.outputs = torch.empty(0)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._positions, self._outputs = [], []

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._positions.append(batch[1])
        self._outputs.append(outputs.detach().float())

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        positions = gather(trainer.strategy, torch.cat(self._positions))
        outputs = gather(trainer.strategy, torch.cat(self._outputs))
        order = positions.argsort(stable=True)
        self.positions, self.outputs = positions[order].cpu(), outputs[order].cpu()


def gather(strategy: Strategy, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` of every rank concatenated in rank order; the ranks' first dimensions may differ (collectives
    need equal shapes, so each is padded to the largest and trimmed again)."""
    if strategy.world_size == 1:
        return tensor
    with warnings.catch_warnings():
        # Lightning gathers through torch.distributed.nn.functional, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated")
        sizes = strategy.all_gather(torch.tensor([len(tensor)], device=tensor.device)).flatten().tolist()
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[:len(tensor)] = tensor
        gathered = strategy.all_gather(padded)  # (world, largest, ...)
    return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])


def prediction_columns(ids: Sequence[int | str], outputs: torch.Tensor, targets: torch.Tensor | None,
                       num_classes: int | None, sigmoid: bool) -> dict[str, list]:
    """The table of predictions, column by column.

    Classification (`num_classes` set): `id`, `label` (the true class, when known), `predicted` (the most
    probable class) and `prob_<class>` for each class (softmax, or per-class sigmoid for models trained
    with a binary loss). Regression: `id`, `target` (when known) and `prediction` (`target_<i>`,
    `prediction_<i>` for several outputs).
    """
    columns: dict[str, list] = {"id": list(ids)}
    if num_classes is not None:
        probabilities = torch.sigmoid(outputs) if sigmoid else torch.softmax(outputs, dim=1)
        if targets is not None:
            columns["label"] = targets.tolist()
        columns["predicted"] = outputs.argmax(dim=1).tolist()
        columns.update({f"prob_{c}": probabilities[:, c].tolist() for c in range(outputs.shape[1])})
        return columns
    for name, values in (("target", targets), ("prediction", outputs)):
        if values is None:
            continue
        values = values.reshape(len(values), -1)
        single = values.shape[1] == 1
        columns.update({name if single else f"{name}_{i}": values[:, i].tolist()
                        for i in range(values.shape[1])})
    return columns


def check_format(format: str) -> None:
    """Refuse an unknown format, or Parquet without pyarrow, before anything is predicted."""
    if format not in FORMATS:
        raise unknown_choice("format", format, list(FORMATS))
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("format=parquet needs pyarrow: pip install pyarrow (or chainrule[parquet]); "
                              "or write CSV with format=csv") from None


def write_table(columns: dict[str, list], path: Path, format: str) -> Path:
    """Write `columns` to `path` (suffix given by `format`), atomically (a temporary file renamed)."""
    check_format(format)
    path = path.with_suffix(f".{format}")
    temporary = path.with_name(f".{path.name}.partial")
    if format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), temporary)
    else:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(zip(*columns.values()))
    temporary.replace(path)
    return path
