"""Reading back the offline W&B runs a training run leaves in its run directory (<run dir>/wandb/
offline-run-*), through `wandb leet inspect --json`: the records W&B would upload."""

import json
from pathlib import Path
from typing import Any

from tests.support.processes import run_cli


def offline_runs(run_dir: Path) -> list[Path]:
    """The offline W&B run directories under a run directory, oldest first (names start with the time)."""
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def inspect(run: Path, *options: str) -> str:
    done = run_cli("wandb", "leet", "inspect", "--json", *options, str(run), cwd=run, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in inspect(run).splitlines() if line.startswith("{")]


def run_record(run: Path) -> dict[str, Any]:
    return next(r["run"] for r in records(run) if r["type"] == "run")


def history(run: Path) -> list[dict[str, Any]]:
    """The logged rows, in order (each a dict of metric name -> value)."""
    return [r["history"]["item"] for r in records(run) if r["type"] == "history"]


def summary(run: Path) -> dict[str, Any]:
    """State (finished/failed), exit code, config and latest metric values of a run."""
    return json.loads(inspect(run, "--summary"))
