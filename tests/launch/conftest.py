"""The DDP launch tests' reference, a single process, and what their runs (of tests.support.presets.DDP_RUN,
real gloo process groups on CPU) must have in common with it."""

from pathlib import Path

import pytest

from tests.support.presets import DDP_RUN
from tests.support.processes import run_cli


@pytest.fixture(scope="session")
def single_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, the whole global batch per step."""
    root = tmp_path_factory.mktemp("single")
    result = run_cli("chainrule-train", *DDP_RUN, "trainer=cpu", f"hydra.run.dir={root}/run", cwd=root,
                     merge_stderr=True)
    assert result.returncode == 0, result.stdout[-3000:]
    return root / "run"
