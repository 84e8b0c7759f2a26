"""What the DDP tests' runs (of tests.support.presets.DDP_RUN, real gloo process groups on CPU) must have
in common with a single process."""

from pathlib import Path

import torch

from tests.support.presets import DDP_RUN_STEPS


def assert_same_parameters(checkpoint: Path, reference: Path, rtol: float = 1e-6) -> None:
    """Every parameter tensor within `rtol` of the reference, relative to the reference's norm, after
    the same number of optimizer steps."""
    ours, theirs = torch.load(checkpoint, weights_only=True), torch.load(reference, weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == DDP_RUN_STEPS
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    errors = {name: ((value - theirs["state_dict"][name]).norm() / theirs["state_dict"][name].norm()).item()
              for name, value in ours["state_dict"].items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rtol, f"{worst} differs by {errors[worst]:.3g} relative (> {rtol})"
    # The runs did train: SGD's momentum buffers are non-zero after DDP_RUN_STEPS steps.
    momenta = [s["momentum_buffer"] for s in ours["optimizer_states"][0]["state"].values()]
    assert momenta and all(m.abs().sum() > 0 for m in momenta)


def files_in(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}

