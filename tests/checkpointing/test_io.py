"""Checkpoints are loaded without running code, and written atomically."""

from pathlib import Path

import pytest
import torch

from chainrule.checkpointing.io import AtomicCheckpointIO, load_checkpoint
from chainrule.core.errors import CheckpointError
from tests.support.checkpoints import malicious_checkpoint
from tests.support.processes import run_cli


def test_malicious_pickle_is_refused_by_default(tmp_path: Path) -> None:
    path, marker = malicious_checkpoint(tmp_path)
    for load in (load_checkpoint, AtomicCheckpointIO(write_delay_s=0.0).load_checkpoint):
        with pytest.raises(
            CheckpointError, match=r"refusing to load checkpoint .*evil\.ckpt.*\((posix|os|nt)\.system\)"
        ):
            load(path)
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_checkpoints_written_by_chainrule_load_safely(tmp_path: Path) -> None:
    io = AtomicCheckpointIO(write_delay_s=0.0)
    state = {
        "state_dict": {"w": torch.randn(3)},
        "loops": {"fit_loop": {"epoch": 1}},
        "chainrule_config": {"a": [1]},
    }
    io.save_checkpoint(state, tmp_path / "checkpoints" / "c.ckpt")
    loaded = io.load_checkpoint(tmp_path / "checkpoints" / "c.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["c.ckpt"]  # no temporary file left


@pytest.mark.slow
def test_cli_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    path, marker = malicious_checkpoint(tmp_path)
    result = run_cli(
        "chainrule-eval", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path
    )
    assert result.returncode != 0
    assert "refusing to load checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
