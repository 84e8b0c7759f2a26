"""The DDP launch tests' reference, a single process, and what their runs (of tests.support.presets.DDP_RUN,
real gloo process groups on CPU) must have in common with it."""

from pathlib import Path

import pytest

from tests.support.checkpoints import read_checkpoint
from tests.support.presets import DDP_RUN, DDP_RUN_STEPS
from tests.support.processes import run_cli


@pytest.fixture(scope="session")
def single_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, the whole global batch per step."""
    root = tmp_path_factory.mktemp("single")
    result = run_cli("chainrule-train", *DDP_RUN, "trainer=cpu", f"hydra.run.dir={root}/run", cwd=root,
                     merge_stderr=True)
    assert result.returncode == 0, result.stdout[-3000:]
    return root / "run"


def assert_same_parameters(checkpoint: Path, reference: Path, rtol: float = 1e-6) -> None:
    """Every parameter tensor within `rtol` of the reference, relative to the reference's norm, after
    the same number of optimizer steps."""
    ours, theirs = read_checkpoint(checkpoint), read_checkpoint(reference)
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
