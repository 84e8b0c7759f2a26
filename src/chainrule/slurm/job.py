"""What a training config asks of SLURM, checked for consistency before anything is submitted.

Nodes, tasks per node and GPUs per node are derived from the trainer (one task per device, as
Lightning's SLURMEnvironment expects), never written twice; everything else comes from `cluster`.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from omegaconf import DictConfig

from chainrule.core.errors import ConfigError, unknown_choice
from chainrule.launch.devices import check_global_batch, devices_per_node, starts_own_processes
from chainrule.slurm.cluster import Partition

GPU_ACCELERATORS = ("gpu", "cuda")

# sbatch options chainrule-submit writes itself, by the config key each comes from: the same option in
# cluster.sbatch would contradict the config (or break requeueing and the run directory).
DERIVED_OPTIONS = {
    "trainer.num_nodes": ("--nodes", "-N"),
    "trainer.num_nodes x trainer.devices": ("--ntasks", "-n"),
    "trainer.devices": ("--ntasks-per-node",),
    "trainer.devices (GPU trainer) or cluster.gpus_per_node": ("--gpus", "-G", "--gpus-per-node",
                                                               "--gpus-per-task", "--gres=gpu"),
    "cluster.cpus_per_task": ("--cpus-per-task", "-c"),
    "cluster.mem": ("--mem",),
    "cluster.time": ("--time", "-t"),
    "cluster.partition": ("--partition", "-p"),
    "cluster.account": ("--account", "-A"),
    "cluster.qos": ("--qos", "-q"),
    "cluster.constraint": ("--constraint", "-C"),
    "cluster.array": ("--array", "-a"),
    "cluster.signal_grace": ("--signal",),
    "cluster.requeue": ("--requeue", "--no-requeue"),
    "name": ("--job-name", "-J"),
    "paths.runs_dir (the run directory)": ("--output", "-o", "--error", "-e", "--open-mode"),
    "the directory you submit from": ("--chdir", "-D"),
}
SOURCE_OF_OPTION = {option: key for key, options in DERIVED_OPTIONS.items() for option in options}


@dataclass(frozen=True)
class JobSpec:
    """The resources of one job; `tasks_per_node` = trainer.devices, one rank per task."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def job_spec(cfg: DictConfig) -> JobSpec:
    """Derive the job's resources from `cfg.trainer` and `cfg.cluster`; raise ConfigError on any request
    that cannot run as asked (so that no job is submitted)."""
    trainer, cluster = cfg.trainer, cfg.cluster
    nodes = positive_int(trainer.num_nodes, "trainer.num_nodes")
    devices = tasks_per_node(trainer)
    check_sbatch_options(cluster.get("sbatch") or [])
    spec = JobSpec(
        nodes=nodes,
        tasks_per_node=devices,
        gpus_per_node=gpus_per_node(str(trainer.accelerator), devices, cluster.gpus_per_node),
        cpus_per_task=positive_int(cluster.cpus_per_task, "cluster.cpus_per_task"),
    )
    check_strategy(trainer.get("strategy"), spec.world_size)
    check_global_batch(cfg, probe=False)
    check_time(cluster.time, cluster.signal_grace)
    if cluster.get("array") is not None:
        array_indices(cluster.array)
    if cluster.mem is not None and not re.fullmatch(r"\d+[KMGT]?", str(cluster.mem)):
        raise ConfigError(f"cluster.mem={cluster.mem} is not a SLURM memory size; use e.g. 64G or 16000M")
    return spec


def positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer for a SLURM job, got {value!r}")
    return value


def tasks_per_node(trainer: DictConfig) -> int:
    """Devices per node as a number, decided on the submitting machine: the job starts that many tasks
    per node."""
    devices = devices_per_node(trainer, probe=False)
    if devices is None:
        raise ConfigError(
            f"trainer.devices={trainer.get('devices')!r} does not say how many tasks to start per node; a "
            f"SLURM job runs one task per device (--ntasks-per-node = trainer.devices), so set a number, "
            f"e.g. trainer.devices=4"
        )
    return devices


def gpus_per_node(accelerator: str, devices: int, requested: int | None) -> int:
    """GPUs per node: trainer.devices on a GPU trainer, none on a CPU trainer; `cluster.gpus_per_node`,
    when set, must agree."""
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int)
                                  or requested < 0):
        raise ConfigError(f"cluster.gpus_per_node must be a non-negative integer or null, got {requested!r}")
    if accelerator == "cpu":
        if requested:
            raise ConfigError(
                f"cluster.gpus_per_node={requested} requests GPUs but trainer.accelerator=cpu would not use "
                f"them; train on GPUs (trainer=gpu) or drop the GPUs (cluster.gpus_per_node=null)"
            )
        return 0
    if accelerator in GPU_ACCELERATORS or (accelerator == "auto" and requested):
        if requested is None:
            return devices
        if requested != devices:
            raise ConfigError(
                f"cluster.gpus_per_node={requested} but trainer.devices={devices}: the job starts one task "
                f"per device, one GPU each; set both to the same number"
            )
        return devices
    if accelerator == "auto" and requested is None:
        raise ConfigError(
            "trainer.accelerator=auto does not say whether the job needs GPUs; choose trainer=gpu "
            "(trainer.devices GPUs per node) or trainer=cpu, or set cluster.gpus_per_node"
        )
    return requested or 0


def check_strategy(strategy: object, world_size: int) -> None:
    if world_size == 1 or not starts_own_processes(strategy):
        return
    name = strategy.get("_target_") if isinstance(strategy, DictConfig) else strategy
    raise ConfigError(
        f"trainer.strategy={name} starts its own processes, but under SLURM srun already starts one "
        f"process per device; use trainer.strategy=ddp"
    )


def check_sbatch_options(options: Iterable[str]) -> None:
    """Refuse extra sbatch options that chainrule-submit derives from the config itself."""
    for option in options:
        text = str(option).strip()
        name = text.split("=", 1)[0].split()[0] if text.startswith("--") else text[:2]
        if name == "--gres":
            if "gpu" not in text:
                continue  # other generic resources are the user's business
            name = "--gres=gpu"
        if name in SOURCE_OF_OPTION:
            source = SOURCE_OF_OPTION[name]
            raise ConfigError(f"cluster.sbatch sets {text!r}, which chainrule-submit derives from {source}; "
                              f"remove it from cluster.sbatch and set {source} instead")


def parse_time(text: str) -> int | None:
    """A SLURM time limit in seconds (None for unlimited): minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
    D-HH:MM:SS."""
    text = str(text).strip()
    if text.upper() in ("INFINITE", "UNLIMITED"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ConfigError(f"cluster.time={text} is not a SLURM time limit; use e.g. 04:00:00, 2-00:00:00 "
                          f"or 90 (minutes)")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        h, m, s = int(first), int(second or 0), int(third or 0)
        return int(days) * 86400 + h * 3600 + m * 60 + s
    if third is not None:  # HH:MM:SS
        return int(first) * 3600 + int(second) * 60 + int(third)
    if second is not None:  # MM:SS
        return int(first) * 60 + int(second)
    return int(first) * 60  # minutes


def check_time(time: str, signal_grace: int | None) -> None:
    limit = parse_time(time)
    if signal_grace is None:
        return
    if isinstance(signal_grace, bool) or not isinstance(signal_grace, int) or signal_grace < 1:
        raise ConfigError(f"cluster.signal_grace must be a positive number of seconds or null, "
                          f"got {signal_grace!r}")
    if limit is not None and signal_grace >= limit:
        raise ConfigError(
            f"cluster.signal_grace={signal_grace}s is not shorter than cluster.time={time} ({limit}s): the "
            f"job would be told to checkpoint and requeue before it trains; lower the grace or raise the time"
        )


def array_indices(spec: object) -> list[int]:
    """The task ids of a `--array` spec such as `0-7`, `1,3,5`, `0-15:4` or `0-99%10`."""
    indices: list[int] = []
    for part in str(spec).split("%")[0].split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if not match:
            raise ConfigError(f"cluster.array={spec} is not a SLURM array spec; use e.g. 0-7, 1,3,5, "
                              f"0-15:4 or 0-99%10")
        first, last, step = match.groups()
        indices += range(int(first), int(last or first) + 1, int(step or 1))
    return indices


def check_fits(spec: JobSpec, partition: str | None, partitions: dict[str, Partition]) -> None:
    """Refuse a job the partition can never run (it would wait in the queue forever); `partition` None
    means the cluster's default partition."""
    if partition is None:
        default = [p for p in partitions.values() if p.default]
        if not default:
            return  # no default partition: sbatch itself refuses the job
        found = default[0]
    elif partition not in partitions:
        raise unknown_choice("partition (cluster.partition)", partition, list(partitions))
    else:
        found = partitions[partition]
    where = f"partition {found.name}"
    if spec.nodes > found.nodes:
        raise ConfigError(f"trainer.num_nodes={spec.nodes} but {where} has {found.nodes} nodes; "
                          f"use at most trainer.num_nodes={found.nodes} or another partition")
    cpus = spec.tasks_per_node * spec.cpus_per_task
    if cpus > found.cpus_per_node:
        raise ConfigError(
            f"trainer.devices={spec.tasks_per_node} tasks x cluster.cpus_per_task={spec.cpus_per_task} = "
            f"{cpus} CPUs per node, but the nodes of {where} have {found.cpus_per_node}; "
            f"lower cluster.cpus_per_task"
        )
    if spec.gpus_per_node > found.gpus_per_node:
        raise ConfigError(f"{spec.gpus_per_node} GPUs per node (trainer.devices) but the nodes of {where} "
                          f"have {found.gpus_per_node}; use at most trainer.devices={found.gpus_per_node} "
                          f"or a GPU partition (cluster.partition)")
