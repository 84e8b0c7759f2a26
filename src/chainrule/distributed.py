"""Ranks and launch paths: who started this process, which rank it is, and starting local ranks.

A DDP run of N ranks starts in one of three ways, and all end in the same Lightning run:

- `chainrule-train trainer=ddp_cpu trainer.devices=2` (no launcher): this process composes the config,
  becomes rank 0 and starts ranks 1..N-1 itself (`on_all_ranks`). They receive its *resolved* config,
  so they never compose one of their own: no `${now:}` drift, no second run directory, and inside a
  Hydra multirun no rank re-runs the sweep. A rank that dies takes the whole job down at once.
- torchrun (`TORCHELASTIC_RUN_ID`), or srun (`SLURM_NTASKS`): the launcher starts every rank with the
  same command line, so each composes the same config; chainrule.run pins the run directory for all.
- any other launcher that exports `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (and optionally
  `LOCAL_RANK`, `NODE_RANK`), e.g. submitit's `TorchDistributedEnvironment().export()` or a script.

Detection mirrors Lightning's own (torchelastic before SLURM before plain variables), so chainrule and
Lightning always agree on ranks.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from chainrule.data.batching import per_device_batch_size
from chainrule.errors import ConfigError

T = TypeVar("T")

#: Set in the environment of ranks started by `on_all_ranks`: the function to run and its config.
ENTRY_ENV = "CHAINRULE_RANK_ENTRY"
CONFIG_ENV = "CHAINRULE_RANK_CONFIG"

EXTERNAL_LAUNCHERS = ("torchrun", "slurm", "env")
_RENDEZVOUS_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK")
# Lightning starts these strategies' processes itself (multiprocessing, TPU), not as scripts.
_SELF_STARTING = ("spawn", "fork", "notebook", "xla")


@dataclass(frozen=True)
class Launch:
    """How this process was started.

    launcher: `none` (a plain command: chainrule starts any further ranks), `chainrule` (a rank started
    by `on_all_ranks`), `torchrun`, `slurm` or `env` (an external launcher started every rank).
    """

    launcher: str
    rank: int = 0
    world_size: int = 1

    @property
    def external(self) -> bool:
        return self.launcher in EXTERNAL_LAUNCHERS


def detect_launch(env: Mapping[str, str] = os.environ) -> Launch:
    """The launcher of this process, from its environment variables (nothing is imported or probed)."""
    if ENTRY_ENV in env:
        return Launch("chainrule", int(env["RANK"]), int(env["WORLD_SIZE"]))
    if "TORCHELASTIC_RUN_ID" in env:
        return Launch("torchrun", int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)))
    # As Lightning: a job named bash/interactive is an interactive allocation, not an srun step.
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return Launch("slurm", int(env.get("SLURM_PROCID", 0)), int(env["SLURM_NTASKS"]))
    if "WORLD_SIZE" in env and ("RANK" in env or "LOCAL_RANK" in env):
        return Launch("env", int(env.get("RANK", env.get("LOCAL_RANK", 0))), int(env["WORLD_SIZE"]))
    return Launch("none")


def devices_per_node(trainer: Mapping[str, Any]) -> int | None:
    """How many processes `trainer.devices` asks for on each node; None where only Lightning can tell."""
    devices = trainer.get("devices", "auto")
    accelerator = str(trainer.get("accelerator", "auto"))
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    if devices in ("auto", -1):
        import torch

        uses_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        if uses_gpu:
            return torch.cuda.device_count()
        if accelerator in ("cpu", "auto"):
            return 1 if devices == "auto" else os.cpu_count()
    return None


def world_size(trainer: Mapping[str, Any]) -> int | None:
    """trainer.devices x trainer.num_nodes, or None where devices cannot be counted before Lightning."""
    per_node = devices_per_node(trainer)
    return None if per_node is None else per_node * int(trainer.get("num_nodes", 1))


def check_global_batch(cfg: DictConfig) -> None:
    """Fail before any rank starts when data.batch_size does not split into world size x accumulation."""
    world = world_size(cfg.trainer)
    if world is not None:
        per_device_batch_size(cfg.data.batch_size, world, int(cfg.trainer.get("accumulate_grad_batches", 1)))


def on_all_ranks(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run `fn(cfg)` on every rank of the run `cfg` asks for, and return this process's result.

    With no launcher and more than one device, this process is rank 0 and starts the other local
    ranks as `python -m chainrule.rank_process`, which call `fn` on the resolved `cfg`; the process
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
    if launch.launcher == "chainrule" or single or not _starts_scripts(cfg.trainer):
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
    """`module:function` that a new interpreter can import (`python -m chainrule.train` runs `__main__`)."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise ConfigError(f"cannot start further ranks for {fn.__qualname__} defined in a script; "
                              f"run it as a module (python -m ...) or through chainrule-train")
        module = spec.name
    return f"{module}:{fn.__qualname__}"


def _starts_scripts(trainer: Mapping[str, Any]) -> bool:
    """Whether Lightning would start the other ranks by re-running the command (ddp, fsdp, deepspeed)."""
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, Mapping):
        return str(strategy.get("start_method", "popen")) == "popen"
    return not any(word in str(strategy) for word in _SELF_STARTING)


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
            [sys.executable, "-m", "chainrule.rank_process"],
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
        _destroy_process_group()
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
                        _flush_console()
                        print(f"chainrule: rank {rank} (pid {child.pid}) exited with code {code}; "
                              f"stopping the other ranks", file=sys.stderr, flush=True)
                        self._terminate_children()
                        _flush_console()
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


def _flush_console() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _destroy_process_group() -> None:
    """Lightning keeps the process group until exit; a next run in this process needs a new one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class RankPrefixedStream:
    """A text stream that starts every line with `prefix` (e.g. `[rank 1] `) and passes the rest on."""

    def __init__(self, stream: TextIO, prefix: str):
        self._stream = stream
        self._prefix = prefix
        self._at_line_start = True

    def write(self, text: str) -> int:
        if not text:
            return 0
        pieces = []
        for line in text.splitlines(keepends=True):
            if self._at_line_start:
                pieces.append(self._prefix)
            pieces.append(line)
            self._at_line_start = line.endswith(("\n", "\r"))
        self._stream.write("".join(pieces))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def prefix_console(rank: int) -> None:
    """Prefix this process's console output (print, warnings, logging, tracebacks) with its rank.

    Rank 0 stays unprefixed: it is the output users read. Output written by C++ code straight to the file
    descriptors (e.g. gloo warnings) is not prefixed.
    """
    if rank == 0 or isinstance(sys.stdout, RankPrefixedStream):
        return
    import logging

    prefix = f"[rank {rank}] "
    replaced = {}
    for name in ("stdout", "stderr"):
        original = getattr(sys, name)
        replaced[id(original)] = RankPrefixedStream(original, prefix)
        setattr(sys, name, replaced[id(original)])
    # Handlers created before this call (Lightning adds one at import) hold the original streams.
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in replaced:
                handler.setStream(replaced[id(handler.stream)])
