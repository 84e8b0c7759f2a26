"""Checkpoint files for tests: reading one as plain data, and writing one that runs code when unpickled."""

import os
from pathlib import Path
from typing import Any

import torch


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents on the CPU, loaded as data only (weights_only: no code runs)."""
    return torch.load(path, map_location="cpu", weights_only=True)


class Payload:
    """Unpickling this runs a shell command: what a checkpoint from a stranger can do to `torch.load`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_checkpoint(folder: Path) -> tuple[Path, Path]:
    """A checkpoint that looks like chainrule's but carries a payload; returns it and the payload's marker."""
    marker = folder / "payload-ran"
    path = folder / "evil.ckpt"
    torch.save(
        {"state_dict": {"model.weight": torch.zeros(2)}, "global_step": 3, "payload": Payload(marker)}, path
    )
    return path, marker
