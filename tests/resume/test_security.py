"""Checkpoints are loaded without running code; secrets from the environment never reach a run's files."""

import os
import uuid
from pathlib import Path

import pytest
import torch

from chainrule.checkpointing.io import AtomicCheckpointIO, load_checkpoint
from chainrule.core.errors import CheckpointError
from tests.support.presets import DETERMINISTIC_RUN
from tests.support.processes import run_cli


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


@pytest.mark.slow
def test_no_file_in_the_run_dir_contains_the_wandb_api_key(tmp_path: Path) -> None:
    key = f"fake-{uuid.uuid4().hex}"
    run_dir = tmp_path / "run"
    # The key reaches the config twice: through an interpolation and typed on the command line.
    overrides = [
        "logger=[csv,wandb]",
        "+notes=${oc.env:WANDB_API_KEY}",
        f"+data_token={key}",
        "trainer.max_epochs=1",
        "test=true",
        f"hydra.run.dir={run_dir}",
    ]
    result = run_cli(
        "chainrule-train", *DETERMINISTIC_RUN, *overrides, cwd=tmp_path, env={"WANDB_API_KEY": key}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert key not in result.stdout + result.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.name == "config.yaml" for p in files)
    assert any(p.suffix == ".wandb" for p in files), "the W&B run file is among the files checked"
    leaking = [str(p.relative_to(run_dir)) for p in files if key.encode() in p.read_bytes()]
    assert leaking == []
    # What was redacted says where the value comes from.
    assert "${oc.env:WANDB_API_KEY}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
