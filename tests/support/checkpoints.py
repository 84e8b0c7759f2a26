"""Checkpoint files for tests: reading one as plain data, and writing one that runs code when unpickled."""

import os
from pathlib import Path
from typing import Any

import torch

from tests.support.presets import DDP_RUN_STEPS


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


def assert_same_parameters(checkpoint: Path, reference: Path, rtol: float = 1e-6) -> None:
    """Every parameter tensor within `rtol` of the reference, relative to the reference's norm, after
    the same number of optimizer steps."""
    ours, theirs = read_checkpoint(checkpoint), read_checkpoint(reference)
    assert ours["global_step"] == theirs["global_step"] == DDP_RUN_STEPS
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    weights = [name for name in ours["state_dict"] if name.startswith("model.")]  # not the metrics' states
    counters = [name for name in weights if not ours["state_dict"][name].is_floating_point()]
    for name in counters:  # e.g. BatchNorm's num_batches_tracked: exact
        assert torch.equal(ours["state_dict"][name], theirs["state_dict"][name]), f"{name} differs"
    weights = [name for name in weights if name not in counters]
    errors = {name: ((ours["state_dict"][name] - theirs["state_dict"][name]).norm()
                     / theirs["state_dict"][name].norm()).item() for name in weights}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rtol, f"{worst} differs by {errors[worst]:.3g} relative (> {rtol})"
    # The runs did train: SGD's momentum buffers are non-zero after DDP_RUN_STEPS steps.
    momenta = [s["momentum_buffer"] for s in ours["optimizer_states"][0]["state"].values()]
    assert momenta and all(m.abs().sum() > 0 for m in momenta)


def files_in(run_dir: Path) -> set[str]:
    """Every file of a run directory, relative to it."""
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
