"""What chainrule adds to Lightning checkpoints, and reading it back safely."""

from pathlib import Path
from typing import Any

import lightning as L
import torch

from chainrule.errors import CheckpointError

CONFIG_KEY = "chainrule_config"


class RunConfigInCheckpoint(L.Callback):
    """Stores the run's resolved config (plain dicts and lists) in every checkpoint, so that a checkpoint
    alone rebuilds its model and data; no Python objects are pickled into it."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint as plain tensors and containers (`weights_only=True`: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass the path of a .ckpt file, "
                              f"e.g. ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated, foreign or unsafe files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from error


def load_run_config(path: str | Path) -> dict[str, Any]:
    """The resolved config of the run that wrote the checkpoint at `path`."""
    checkpoint = load_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(f"{path} holds no chainrule config; it was not written by chainrule-train")
    return checkpoint[CONFIG_KEY]
