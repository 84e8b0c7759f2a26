"""Secrets from the environment never reach a run's files."""

import uuid
from pathlib import Path

import pytest

from tests.support.presets import DETERMINISTIC_RUN
from tests.support.processes import run_cli


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
