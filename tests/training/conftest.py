"""The uninterrupted reference run that the interrupted runs of test_exact_resume must reproduce, resuming
an interrupted run, and comparing the two bit for bit."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.checkpoints import read_checkpoint
from tests.support.interruptions import output, start
from tests.support.presets import DETERMINISTIC_RUN_STEPS
from tests.support.processes import run_cli


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final checkpoint of the uninterrupted run that every interrupted run must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    process = start(run_dir)
    assert process.wait(timeout=300) == 0, output(run_dir)[-3000:]
    final = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(final, weights_only=True)["global_step"] == DETERMINISTIC_RUN_STEPS
    return final


def resume(run_dir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`chainrule-train resume=run_dir` to the end (nothing else: the run's own config is reused)."""
    return run_cli("chainrule-train", f"resume={run_dir}", *overrides, cwd=run_dir.parent, timeout=timeout)


def training_state(path: Path) -> dict[str, Any]:
    checkpoint = read_checkpoint(path)
    return {
        key: checkpoint[key] for key in ("global_step", "state_dict", "optimizer_states", "lr_schedulers")
    }


def assert_equal_exactly(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality with torch.equal for tensors: zero tolerance."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"keys differ at {where}"
        for key in a:
            assert_equal_exactly(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"lengths differ at {where}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_exactly(x, y, f"{where}/{i}")
    else:
        assert a == b, f"differs at {where}: {a!r} != {b!r}"


def assert_same_result(run_dir: Path, reference: Path) -> None:
    """The run's final parameters, optimizer state and LR schedule equal the uninterrupted run's, bit
    for bit."""
    final = training_state(run_dir / "checkpoints" / "last.ckpt")
    expected = training_state(reference)
    assert final["global_step"] == expected["global_step"]
    assert_equal_exactly(final["state_dict"], expected["state_dict"], "state_dict")
    assert_equal_exactly(final["optimizer_states"], expected["optimizer_states"], "optimizer_states")
    assert_equal_exactly(final["lr_schedulers"], expected["lr_schedulers"], "lr_schedulers")
