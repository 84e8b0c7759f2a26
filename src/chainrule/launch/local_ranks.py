"""Starting the local ranks of a run that no launcher started: `chainrule-train trainer=ddp_cpu
trainer.devices=2` makes this process rank 0 and starts ranks 1..N-1 as `python -m
chainrule.launch.rank_process`. They receive rank 0's *resolved* config, so they never compose one of
their own: no `${now:}` drift, no second run directory, and inside a Hydra multirun no rank re-runs the
sweep. A rank that dies takes the whole job down at once.

Under an external launcher (torchrun, srun, exported variables; see chainrule.launch.detect) every rank
is already running: only the launcher's world size is checked against the config.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from chainrule.core import console
from chainrule.core.errors import ConfigError
from chainrule.launch.console import flush_console
from chainrule.launch.detect import CONFIG_ENV, ENTRY_ENV, Launch, detect_launch
from chainrule.launch.devices import devices_per_node, starts_own_processes, world_size

T = TypeVar("T")

_RENDEZVOUS_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK")


def on_all_ranks(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run `fn(cfg)` on every rank of the run `cfg` asks for, and return this process's result.

    With no launcher and more than one device, this process is rank 0 and starts the other local
    ranks as `python -m chainrule.launch.rank_process`, which call `fn` on the resolved `cfg`; the process
    group is torn down afterwards, so the next job of a multirun starts afresh. Under an external
    launcher, the launcher's world size is checked against the config and `fn` runs here only.
    """
    launch = detect_launch()
    if launch.external:
        _check_launcher_world(cfg.trainer, launch)
        if launch.launcher == "env":
            _complete_env_ranks(devices_per_node(cfg.trainer) or 1)
        return fn(cfg)
    per_node = devices_per_node(cfg.trainer)
    single = per_node is None or per_node <= 1
    if launch.launcher == "chainrule" or single or starts_own_processes(cfg.trainer.get("strategy", "auto")):
        return fn(cfg)
    num_nodes = int(cfg.trainer.get("num_nodes", 1))
    if num_nodes > 1:
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} needs a launcher that starts the processes on every node: "
            f"torchrun --nnodes={num_nodes} --nproc-per-node={per_node} ..., or srun"
        )
    with _local_ranks(_entry_name(fn), OmegaConf.to_yaml(cfg, resolve=True), per_node):
        return fn(cfg)


def _entry_name(fn: Callable) -> str:
    """`module:function` that a new interpreter can import (`python -m chainrule.cli.train` runs `__main__`)."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise ConfigError(f"cannot start further ranks for {fn.__qualname__} defined in a script; "
                              f"run it as a module (python -m ...) or through chainrule-train")
        module = spec.name
    return f"{module}:{fn.__qualname__}"




def _check_launcher_world(trainer: Mapping[str, Any], launch: Launch) -> None:
    expected = world_size(trainer)
    if expected is not None and expected != launch.world_size:
        devices, nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
        hint = {"slurm": f" (under SLURM: --nodes={nodes} --ntasks-per-node={devices}, started with srun)",
                "torchrun": f" (torchrun --nnodes={nodes} --nproc-per-node={devices})"}
        hint = hint.get(launch.launcher, "")
        raise ConfigError(
            f"{launch.launcher} started {launch.world_size} processes, but trainer.devices={devices} x "
            f"trainer.num_nodes={nodes} = {expected}; start one process per device{hint}, or set "
            f"trainer.devices to the processes per node and trainer.num_nodes to the nodes"
        )


def _complete_env_ranks(per_node: int) -> None:
    """Derive LOCAL_RANK/NODE_RANK from RANK where a launcher exported only the torch variables, so that
    Lightning (which reads LOCAL_RANK and NODE_RANK) computes the same global rank as the launcher."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    local = int(os.environ.setdefault("LOCAL_RANK", str(rank % per_node)))
    node = int(os.environ.setdefault("NODE_RANK", os.environ.get("GROUP_RANK", str(rank // per_node))))
    if node * per_node + local != rank:
        raise ConfigError(
            f"RANK={rank} does not match NODE_RANK={node} x {per_node} devices + LOCAL_RANK={local}; "
            f"export consistent variables or set trainer.devices to the processes per node"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _local_ranks(entry: str, config_yaml: str, world: int) -> Iterator[None]:
    """Make this process rank 0 of `world` and start ranks 1..world-1 for the duration of the block."""
    saved = {key: os.environ.get(key) for key in _RENDEZVOUS_ENV}
    rendezvous = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": os.environ.get("MASTER_PORT") or str(free_port()),
        "WORLD_SIZE": str(world),
        "NODE_RANK": "0",
    }
    os.environ.update(rendezvous, LOCAL_RANK="0", RANK="0")
    children = {
        rank: subprocess.Popen(
            [sys.executable, "-m", "chainrule.launch.rank_process"],
            env={**os.environ, **rendezvous, "LOCAL_RANK": str(rank), "RANK": str(rank),
                 ENTRY_ENV: entry, CONFIG_ENV: config_yaml},
        )
        for rank in range(1, world)
    }
    watcher = _RankWatcher(children)
    watcher.start()
    try:
        yield
        for child in children.values():
            child.wait()
    except BaseException:
        watcher.stop_all()
        raise
    finally:
        watcher.stop()
        destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    failed = {rank: child.returncode for rank, child in children.items() if child.returncode}
    if failed:  # only reachable if a rank fails between the watcher's last look and its stop
        raise RuntimeError(f"ranks {sorted(failed)} exited with codes {list(failed.values())}")


class _RankWatcher(threading.Thread):
    """Ends the whole job as soon as a local rank exits with an error.

    The other ranks would otherwise wait for it: in a collective until the process group's timeout, or
    in the rendezvous until its timeout (30 min by default) when it died before joining. Rank 0 may be
    blocked inside such a C++ call where no Python exception can reach it, hence `os._exit`.
    """

    POLL_S = 0.2
    GRACE_S = 3.0

    def __init__(self, children: Mapping[int, subprocess.Popen]):
        super().__init__(daemon=True, name="chainrule-rank-watcher")
        self.children = children
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._stopped.wait(self.POLL_S):
            for rank, child in self.children.items():
                code = child.poll()
                if code:
                    with self._lock:
                        if self._stopped.is_set():
                            return
                        self._stopped.set()
                        flush_console()
                        console.error_line(f"rank {rank} (pid {child.pid}) exited with code {code}; "
                                           f"stopping the other ranks")
                        self._terminate_children()
                        flush_console()
                        os._exit(1)

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()

    def stop_all(self) -> None:
        """Stop watching and end every child (rank 0 itself failed)."""
        self.stop()
        self._terminate_children()

    def _terminate_children(self) -> None:
        running = [child for child in self.children.values() if child.poll() is None]
        for child in running:
            child.terminate()
        for child in running:
            try:
                child.wait(self.GRACE_S)
            except subprocess.TimeoutExpired:
                # Lightning's SIGTERM handler only logs, and a rank blocked in a collective ignores it.
                child.send_signal(signal.SIGKILL)
                child.wait()


def destroy_process_group() -> None:
    """Lightning keeps the process group until exit. A next run in this process needs a new one, and a
    rank that exits with it alive may abort in gloo's threads' destructors ("terminate called without an
    active exception", exit -6) after a run that succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

