"""Sharded checkpoints (trainer=fsdp) as tests compare them: consolidated into whole tensors first."""

from pathlib import Path
from typing import Any

from chainrule.checkpointing.dcp import consolidate
from tests.support.checkpoints import read_checkpoint


def whole(path: Path) -> dict[str, Any]:
    """A checkpoint file, or a sharded checkpoint's folder consolidated: whole tensors either way."""
    return consolidate(path) if path.is_dir() else read_checkpoint(path)


def model_errors(checkpoint: Path, reference: Path) -> dict[str, float]:
    """Each model tensor's difference from the reference's, relative to the reference's norm (the metrics'
    states left out: they are each rank's own)."""
    ours, theirs = whole(checkpoint)["state_dict"], whole(reference)["state_dict"]
    assert ours.keys() == theirs.keys()
    return {name: ((ours[name] - value).norm() / value.norm()).item() for name, value in theirs.items()
            if name.startswith("model.")}
