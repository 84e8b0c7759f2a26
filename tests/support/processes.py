"""Starting chainrule's real entry points, and other tools of this environment, in subprocesses: one
environment (cli_env) and one way to run (run_cli) or start (start) a command.

A command is a console script of this environment (chainrule-train, chainrule-eval, torchrun, wandb, ...)
or the path of an executable (`sys.executable, "-m", module` runs a module of this checkout even before
the console scripts are reinstalled).
"""

import contextlib
import os
import resource
import shlex
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import pytest

from tests.support.paths import BIN, REPO

# This machine's few cores are shared: torch's intra-op threads then spin against each other and a tiny
# forward pass takes 50x longer. One thread per process keeps small runs fast; results are the same.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Set by torchrun or a plain launcher for each rank; a process the tests start must not inherit a rank.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK",
                      "GROUP_RANK")


def inherited(name: str) -> bool:
    """Whether a variable of the environment running the tests reaches the processes they start: not one
    that makes a result depend on who runs the tests and where (a launcher's or SLURM job's, chainrule's
    own such as CHAINRULE_RUN_ID, W&B settings and credentials, HYDRA_FULL_ERROR, make's). The local SLURM
    cluster's settings (CHAINRULE_SLURM_*) are the exception: they say where that cluster runs."""
    if name.startswith("CHAINRULE_"):
        return name.startswith("CHAINRULE_SLURM_")
    return not (name.startswith(("SLURM_", "TORCHELASTIC_", "WANDB_")) or name in LAUNCHER_VARIABLES
                or name in ("HYDRA_FULL_ERROR", "NETRC") or name in MAKE_VARIABLES)


# Set by `make test ARGS=...` for its sub-makes: a `make train` in the docs would get pytest's ARGS.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def cli_env(**overrides: str | None) -> dict[str, str]:
    """The environment of every process the tests start: this one's inherited variables, this checkout's
    src/ and the `tests` package importable, unbuffered output, W&B offline, Python stacks printed on a
    fatal signal (a crash, or stacks_of_hung); then `overrides` (None removes a variable)."""
    env = {name: value for name, value in os.environ.items() if inherited(name)}
    paths = [str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]
    env.update(PYTHONPATH=os.pathsep.join(p for p in paths if p), PYTHONUNBUFFERED="1", WANDB_MODE="offline",
               PYTHONFAULTHANDLER="1")
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def run_cli(command: str, *args: str, cwd: Path, env: Mapping[str, str | None] | None = None,
            timeout: float = 300, merge_stderr: bool = False) -> subprocess.CompletedProcess:
    """Run `command ARGS...` to the end in `cwd`, with cli_env(**env); returns the completed process (never
    raises on a non-zero exit). stdin is closed, so that a prompt fails instead of hanging. stdout and
    stderr are captured apart, or with `merge_stderr` both in `.stdout`, in the order they were written.
    A command still running after `timeout` seconds fails the test with the Python stacks of all its
    processes (see stacks_of_hung)."""
    process = subprocess.Popen([str(BIN / command), *args], cwd=cwd, env=cli_env(**(env or {})),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} {shlex.join(args)} still ran after {timeout} s; {stacks_of_hung(process)}",
                    pytrace=False)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def stacks_of_hung(process: subprocess.Popen) -> str:
    """End a hung command and every process of its group (ranks, data loader workers) with SIGABRT, on
    which each one's faulthandler (PYTHONFAULTHANDLER, set by cli_env) prints the stack of every thread;
    returns what they printed. A rare hang is then found from the one run that showed it."""
    try:
        leads_its_group = os.getpgid(process.pid) == process.pid  # else its group is the tests' own
    except ProcessLookupError:  # it ended just now; what it started may still run
        leads_its_group = True
    for pid in group_members(process.pid) if leads_its_group else [process.pid]:
        with contextlib.suppress(OSError):
            resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))  # their stacks, not their memory on disk
            os.kill(pid, signal.SIGABRT)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired as still:  # a process outside the group holds its output open
            stdout, stderr = still.stdout, still.stderr
    printed = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                      for part in (stdout, stderr) if part)
    return f"what its processes printed, stacks last:\n{printed}"[-30000:]


def group_members(group: int) -> list[int]:
    """The processes of process group `group`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, ...
            if int(fields[2]) == group:
                members.append(int(stat.parent.name))
    return members


def start(command: str, *args: str, cwd: Path, env: Mapping[str, str | None] | None = None,
          output: int | IO = subprocess.PIPE, new_session: bool = False) -> subprocess.Popen:
    """Start `command ARGS...` as run_cli would, without waiting. stdout and stderr together go to `output`:
    a pipe (read it with finish), an open file, or subprocess.DEVNULL. With `new_session` the process
    leads a process group of its own, so that os.killpg ends it with its children (W&B's service process,
    a sweep's trials)."""
    return subprocess.Popen([str(BIN / command), *args], cwd=cwd, env=cli_env(**(env or {})),
                            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, text=True,
                            start_new_session=new_session)


def finish(processes: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    """Wait for every started process; their outputs (also on failure, for the assertion message)."""
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
    return outputs


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A free TCP port on 127.0.0.1, optionally within [low, high] (a rendezvous port for DDP ranks)."""
    for port in (range(low, high + 1) if low is not None else [0]):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port in [{low}, {high}]")
