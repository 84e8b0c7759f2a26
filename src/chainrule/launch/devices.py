"""Device arithmetic of a trainer config: processes per node, world size, tensor-parallel size, whether
Lightning starts the processes itself, and whether the global batch splits over the data-parallel ranks.
Every caller (validation, the local
launcher, SLURM submission) asks here."""

import os
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig

from chainrule.core.errors import ConfigError
from chainrule.data.batching import per_device_batch_size

# Lightning starts these strategies' processes itself (multiprocessing, TPU), not by re-running the
# command: chainrule must not start ranks for them, and under srun (one task per rank) they are wrong.
SELF_STARTING_STRATEGIES = ("spawn", "fork", "notebook", "xla")


def devices_per_node(trainer: Mapping[str, Any], probe: bool = True) -> int | None:
    """How many processes `trainer.devices` asks for on each node.

    `auto` and -1 depend on the machine: with `probe` they are counted here (CUDA GPUs, or CPU cores),
    without it (a login node deciding for a compute node) they give None, as does anything only
    Lightning can interpret.
    """
    devices = trainer.get("devices", "auto")
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    if devices in ("auto", -1) and probe:
        import torch

        accelerator = str(trainer.get("accelerator", "auto"))
        uses_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        if uses_gpu:
            return torch.cuda.device_count()
        if accelerator in ("cpu", "auto"):
            return 1 if devices == "auto" else os.cpu_count()
    return None


def world_size(trainer: Mapping[str, Any], probe: bool = True) -> int | None:
    """trainer.devices x trainer.num_nodes, or None where devices cannot be counted (see devices_per_node)."""
    per_node = devices_per_node(trainer, probe)
    return None if per_node is None else per_node * int(trainer.get("num_nodes", 1))


def tensor_parallel_size(trainer: Mapping[str, Any]) -> int:
    """Ranks that split each layer (trainer=fsdp's `strategy.tensor_parallel_size`); 1 without tensor
    parallelism."""
    strategy = trainer.get("strategy")
    size = strategy.get("tensor_parallel_size", 1) if isinstance(strategy, Mapping) else 1
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else 1


def check_global_batch(cfg: DictConfig, probe: bool = True) -> None:
    """Raise ConfigError, before any rank starts, when data.batch_size does not split into the
    data-parallel ranks (world size / tensor-parallel size: the ranks of one tensor-parallel group take
    the same samples) x gradient accumulation (see chainrule.data.batching), or when the tensor-parallel
    size does not divide the world size."""
    world = world_size(cfg.trainer, probe) or 1
    tensor = tensor_parallel_size(cfg.trainer)
    if world % tensor:
        raise ConfigError(f"trainer.strategy.tensor_parallel_size={tensor} does not divide the {world} ranks "
                          f"(trainer.devices x trainer.num_nodes); use a divisor of {world}")
    if cfg.data.get("batch_size") is None:
        return
    per_device_batch_size(cfg.data.batch_size, world // tensor, cfg.trainer.get("accumulate_grad_batches", 1))


def starts_own_processes(strategy: object) -> bool:
    """Whether Lightning starts the ranks of `strategy` (a name or a `_target_` config) itself, rather than
    by re-running the command (ddp, fsdp: the way chainrule and external launchers start them)."""
    if isinstance(strategy, Mapping):
        return str(strategy.get("start_method", "popen")) != "popen"
    return any(word in str(strategy) for word in SELF_STARTING_STRATEGIES)
