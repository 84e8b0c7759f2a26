"""Running chainrule-train with W&B isolated in a temporary directory (its offline runs are read with
tests.support.wandb_runs)."""

import subprocess
from pathlib import Path

from tests.support.presets import NO_PROGRESS_BARS
from tests.support.processes import run_cli

# Two short epochs of five steps, a metric row per step, no progress bar.
QUICK = ["debug=limit", *NO_PROGRESS_BARS, "trainer.log_every_n_steps=1"]


def isolated_env(tmp: Path, **extra: str | None) -> dict[str, str | None]:
    """What a test run's environment adds to cli_env() (which already leaves out the W&B credentials and
    settings of the person running the tests, and sets WANDB_MODE=offline): HOME and W&B's own directories
    inside `tmp`, then `extra` (None removes a variable). WANDB_DIR points at a directory that must stay
    absent: the logger writes into the run directory, never where W&B would by default. For the `env` of
    run_cli and start."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"),
            "WANDB_CACHE_DIR": str(home / ".cache" / "wandb"),
            "WANDB_DATA_DIR": str(home / ".local" / "wandb"), "WANDB_DIR": str(stray_dir(tmp)), **extra}


def stray_dir(tmp: Path) -> Path:
    return tmp / "stray-wandb-dir"


def train_args(run_dir: Path, *overrides: str, multirun: bool = False) -> list[str]:
    """The arguments of chainrule-train for a QUICK run (or sweep) into `run_dir`."""
    where = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
    return [*(["-m"] if multirun else []), where, *QUICK, *overrides]


def train(run_dir: Path, *overrides: str, env: dict[str, str | None], cwd: Path, multirun: bool = False,
          timeout: float = 300) -> subprocess.CompletedProcess:
    """chainrule-train to the end (stdin closed: any prompt would fail, not hang); `env` from isolated_env."""
    return run_cli("chainrule-train", *train_args(run_dir, *overrides, multirun=multirun), cwd=cwd, env=env,
                   timeout=timeout)
