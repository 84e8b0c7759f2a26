"""One process at a time in a run directory.

A second command pointed at a run directory while its run is still going (`resume=latest` typed in
another terminal, a sweep started twice, a job submitted again before the first one ended) would train
from the same checkpoints and write the same checkpoints and metrics files, each process overwriting the
other's. The process that records a run (rank 0) holds an exclusive lock on `<run dir>/.hydra/run.lock`
until it exits; another one is refused in one line before it writes anything.

The lock is a POSIX record lock (`lockf`), which belongs to the process: forked children (data loader
workers, which outlive a killed run by a few seconds) do not hold it, and the kernel lets go of it when
the process ends, however it ends (a crash, SIGKILL, a preempted SLURM job), so it never outlives its
run. Network file systems that lock (NFSv4) lock for every node; on one that cannot lock, runs go
unguarded rather than refused.
"""

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from chainrule.core.errors import ConfigError

LOCK_FILE = "run.lock"
_held: dict[Path, int] = {}  # run directory -> the open lock file's descriptor, held until release


def hold_run_dir(run_dir: Path, record_dir: Path) -> None:
    """Lock `run_dir` for this process (again: no-op), or refuse when another process holds it."""
    run_dir = run_dir.resolve()
    if run_dir in _held:
        return
    record_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(record_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.read(fd, 4096).decode(errors="replace").strip()
        os.close(fd)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return  # a file system without locks
        pid = holder.split()[1] if holder.startswith("pid ") else None
        raise ConfigError(
            f"{run_dir} is in use by another chainrule process ({holder or 'holder unknown'}); two processes "
            f"in one run directory would overwrite each other's checkpoints and metrics. Wait for it to end"
            + (f", or stop it first (kill {pid})" if pid else "") + ", then run this again"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                 f"\n".encode())
    _held[run_dir] = fd


def release_run_dir(run_dir: Path) -> None:
    """Let go of `run_dir` (a multirun's job is done; its process goes on to the next job)."""
    fd = _held.pop(run_dir.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing a descriptor of the file releases this process's lock on it
