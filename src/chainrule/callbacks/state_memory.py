"""How much memory each rank spends on training state, said once when training starts."""

from typing import Any

import lightning as L
import torch
import torch.distributed as dist

from chainrule.core import console
from chainrule.optim.grad_norms import any_sharded, local_part
from chainrule.optim.memory import KINDS, human, state_bytes


class StateMemory(L.Callback):
    """After the first optimizer step of each fit (the optimizer creates its state in that step), says in
    one line the bytes of parameters, gradients and optimizer state that a rank holds: the largest over
    the ranks. Under DDP every rank holds all of it; under FSDP each holds about 1/N
    (chainrule.optim.memory counts each rank's shards)."""

    def __init__(self) -> None:
        self._said = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._said = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._said or not any(opt.state for opt in trainer.optimizers):
            return  # before the first optimizer step (or while gradients accumulate)
        self._said = True
        parameters = list(pl_module.parameters())
        counted = state_bytes(parameters, trainer.optimizers)
        values = torch.tensor([counted.parameters, counted.gradients, counted.optimizer], dtype=torch.float64,
                              device=local_part(parameters[0]).device if parameters else "cpu")
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(values, op=dist.ReduceOp.MAX)  # every rank takes part; rank 0 speaks
        sizes = ", ".join(f"{kind} {human(value)}" for kind, value in zip(KINDS, values.tolist()))
        how = (f"sharded over {trainer.world_size} ranks" if any_sharded(parameters)
               else "whole on every rank" if trainer.world_size > 1 else "one process")
        console.say(f"training state per rank: {sizes} ({how})")
