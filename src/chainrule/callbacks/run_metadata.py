"""Facts about a run that its config does not say: code version, where it ran, model size."""

import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

KEY = "run_info"


def git_state(repo_dir: str | Path) -> dict[str, Any]:
    """`git_commit` and `git_dirty` (tracked files changed, as `git describe --dirty` counts them) of the
    repository holding `repo_dir`; empty when it is not in a git repository or git is missing."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {}
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def slurm_state(environ: Mapping[str, str]) -> dict[str, Any]:
    """SLURM job id (array jobs: `<array job>_<task>`) and node, when running inside a SLURM job."""
    if "SLURM_JOB_ID" not in environ:
        return {}
    job = environ["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in environ and "SLURM_ARRAY_TASK_ID" in environ:
        job = f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    state = {"slurm_job_id": job}
    if "SLURMD_NODENAME" in environ:
        state["slurm_node"] = environ["SLURMD_NODENAME"]
    return state


def parameter_counts(module: L.LightningModule) -> dict[str, int]:
    params = list(module.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return {"params_total": total, "params_trainable": trainable, "params_frozen": total - trainable}


class RunMetadata(L.Callback):
    """Logs `run_info`: git commit and dirty flag of `repo_dir`, host, SLURM job id and node when present,
    world size and parameter counts, as hyperparameters of every logger (W&B config, CSV hparams.yaml)."""

    def __init__(self, repo_dir: str):
        self.repo_dir = repo_dir
        self._logged = False

    @rank_zero_only
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._logged:
            return
        info = {
            **git_state(self.repo_dir),
            "host": socket.gethostname(),
            **slurm_state(os.environ),
            "world_size": trainer.world_size,
            **parameter_counts(pl_module),
        }
        for logger in trainer.loggers:
            logger.log_hyperparams({KEY: info})
        self._logged = True
