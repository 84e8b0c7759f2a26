"""The uninterrupted reference run that the interrupted runs of tests/resume must reproduce."""

from pathlib import Path

import pytest
import torch

from tests.resume.runs import output, start
from tests.support.presets import DETERMINISTIC_RUN_STEPS


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final checkpoint of the uninterrupted run that every interrupted run must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    process = start(run_dir)
    assert process.wait(timeout=300) == 0, output(run_dir)[-3000:]
    final = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(final, weights_only=True)["global_step"] == DETERMINISTIC_RUN_STEPS
    return final
