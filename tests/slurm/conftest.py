"""A real two-node SLURM cluster for the tests in this folder (slurm/local/), and helpers that submit
jobs with chainrule-submit and follow them through squeue and sacct."""

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.machine_share import run_at_the_end
from tests.support.paths import REPO
from tests.support.processes import cli_env

LOCAL = REPO / "slurm" / "local"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


def python_module(module: str, *args: str) -> list[str]:
    """A chainrule command as `python -m`, so that it runs this checkout's code whatever is installed."""
    return [sys.executable, "-m", module, *args]


@dataclass
class Job:
    id: str
    run_dir: Path

    @property
    def log(self) -> str:
        path = self.run_dir / "slurm.out"
        return path.read_text(errors="replace") if path.is_file() else ""


@dataclass
class LocalCluster:
    """The running cluster: `env` holds SLURM_CONF for every command that talks to it."""

    env: dict[str, str]

    def command(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def run(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, *overrides: str, cwd: Path) -> Job:
        """Submit through `chainrule-submit`; fails the test unless a job was queued."""
        result = self.run(*python_module("chainrule.slurm.submit", *overrides), cwd=cwd)
        assert result.returncode == 0, f"chainrule-submit failed:\n{result.stdout}\n{result.stderr}"
        job_id = re.search(r"submitted job (\S+)", result.stdout).group(1)
        run_dir = Path(re.search(r"run directory: (.+)", result.stdout).group(1))
        return Job(job_id, run_dir)

    def history(self, job_id: str) -> list[str]:
        """The job's states in sacct, one per start (REQUEUED for each start that was requeued)."""
        out = self.command("sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
                           "--jobs", job_id, "--format=State")
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def state(self, job_id: str) -> str:
        return self.command("squeue", "--noheader", "--jobs", job_id, "--format=%T", check=False).strip()

    def wait(self, job: Job, timeout: float = 300) -> list[str]:
        """Wait until the job has finished for good; returns its sacct history (e.g. REQUEUED, COMPLETED)."""
        deadline = time.monotonic() + timeout
        while self.state(job.id):
            if time.monotonic() > deadline:
                self.command("scancel", job.id, check=False)
                raise AssertionError(f"job {job.id} did not finish within {timeout:.0f}s; "
                                     f"log:\n{job.log[-3000:]}")
            time.sleep(1)
        return self.final_history(job.id)

    def final_history(self, job_id: str, timeout: float = 30) -> list[str]:
        """The sacct history of a job that has left the queue; sacct lags squeue by a second or two."""
        deadline = time.monotonic() + timeout
        while (history := self.history(job_id)) and history[-1] not in FINAL_STATES:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return history

    def jobs_named(self, name: str) -> str:
        """Queued and finished jobs called `name` (empty when SLURM never saw one)."""
        return (self.command("squeue", "--noheader", f"--name={name}") +
                self.command("sacct", "--noheader", "--allocations", f"--name={name}"))


def cluster_responds(env: dict[str, str]) -> bool:
    try:
        return subprocess.run(["scontrol", "ping"], env=env, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalCluster]:
    """Starts the local cluster once per session (unless it already runs) and stops it afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster runs its daemons as root (slurm/local/start.sh)")
    state_dir = os.environ.get("CHAINRULE_SLURM_DIR", "/tmp/chainrule-slurm")
    env = cli_env(PATH=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
                  SLURM_CONF=f"{state_dir}/etc/slurm.conf")
    was_running = cluster_responds(env)
    started = subprocess.run([str(LOCAL / "start.sh"), state_dir], env=env, capture_output=True, text=True,
                             timeout=600)
    if started.returncode:
        pytest.fail(f"slurm/local/start.sh failed ({started.returncode}):\n{started.stderr[-4000:]}")
    env.update(re.findall(r"^export (\w+)=(\S+)$", started.stdout, flags=re.MULTILINE))
    yield LocalCluster(env)
    stop = [str(LOCAL / "stop.sh"), state_dir]
    if not was_running and not run_at_the_end(stop, env):
        subprocess.run(stop, env=env, capture_output=True, timeout=300)
