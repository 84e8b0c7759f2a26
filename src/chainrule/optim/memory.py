"""What training state costs each rank in memory: its parameters, gradients and optimizer state, counted
on the tensors themselves (a sharded tensor counts only this rank's shard). Activations and the memory
allocator's reserve are not included: they depend on the batch, the device and its allocator."""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.optim import Optimizer

from chainrule.optim.grad_norms import local_part

KINDS = ("parameters", "gradients", "optimizer")


@dataclass(frozen=True)
class StateBytes:
    """Bytes of this rank's share of the training state."""

    parameters: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    unique = {id(t): t for t in tensors}.values()  # a tied parameter counts once
    return sum(local_part(t).numel() * local_part(t).element_size() for t in unique)


def state_bytes(parameters: Iterable[torch.Tensor], optimizers: Iterable[Optimizer]) -> StateBytes:
    """This rank's bytes of `parameters` (each once), of their gradients as they are now, and of every
    tensor in the optimizers' state (moments, step counts)."""
    parameters = list(parameters)
    gradients = [p.grad for p in parameters if p.grad is not None]
    optimizer = [value for opt in optimizers for state in opt.state.values() for value in state.values()
                 if isinstance(value, torch.Tensor)]
    return StateBytes(_nbytes(parameters), _nbytes(gradients), _nbytes(optimizer))


def human(size: float) -> str:
    """1.5 KiB, 12.0 MiB, 3.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
