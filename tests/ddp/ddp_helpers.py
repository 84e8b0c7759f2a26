"""Shared pieces of the DDP tests: one training config, and what its runs must have in common with a single
process. The processes themselves (real gloo process groups on CPU) are started by tests.support.processes."""

from pathlib import Path

import torch

# A tiny classification run: 223 samples -> 133 train (4 global batches of 32 per epoch), 45 validation
# and 45 test samples (odd: split over 2 ranks, padding would duplicate a sample). 8 optimizer steps =
# 2 epochs, so the per-epoch reshuffle is covered. Plain SGD (momentum) and no dropout: dropout masks
# depend on each process's random stream, so a run with dropout cannot equal a single process exactly.
STEPS = 8
TRAIN = (
    "data=synthetic", "data.num_samples=223", "data.batch_size=32", "model.dropout=0", "optim=sgd",
    f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=1", "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false", "logger=csv",
)


def assert_same_parameters(checkpoint: Path, reference: Path, rtol: float = 1e-6) -> None:
    """Every parameter tensor within `rtol` of the reference, relative to the reference's norm, after
    the same number of optimizer steps."""
    ours, theirs = torch.load(checkpoint, weights_only=True), torch.load(reference, weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == STEPS
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    errors = {name: ((value - theirs["state_dict"][name]).norm() / theirs["state_dict"][name].norm()).item()
              for name, value in ours["state_dict"].items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rtol, f"{worst} differs by {errors[worst]:.3g} relative (> {rtol})"
    # The runs did train: SGD's momentum buffers are non-zero after STEPS steps.
    momenta = [s["momentum_buffer"] for s in ours["optimizer_states"][0]["state"].values()]
    assert momenta and all(m.abs().sum() > 0 for m in momenta)


def files_in(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}

