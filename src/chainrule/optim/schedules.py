"""Learning-rate schedules. Each takes the optimizer and the run's total number of optimizer steps and
returns Lightning's scheduler dict (or None for a constant rate); `interval` says how it is stepped."""

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau, StepLR

SchedulerConfig = dict[str, Any] | None


def constant(optimizer: Optimizer, total_steps: int) -> SchedulerConfig:
    return None


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float, min_lr_ratio: float
) -> SchedulerConfig:
    """Linear warm-up over the first `warmup_fraction` of steps, then cosine decay to `min_lr_ratio` x lr."""
    warmup_steps = round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def step_decay(optimizer: Optimizer, total_steps: int, step_size: int, gamma: float) -> SchedulerConfig:
    """Multiply the rate by `gamma` every `step_size` epochs."""
    return {"scheduler": StepLR(optimizer, step_size=step_size, gamma=gamma), "interval": "epoch"}


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
) -> SchedulerConfig:
    """One-cycle policy whose peak is each parameter group's configured lr."""
    max_lr = [group["lr"] for group in optimizer.param_groups]
    scheduler = OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start,
        div_factor=div_factor, final_div_factor=final_div_factor,
    )
    return {"scheduler": scheduler, "interval": "step"}


def reduce_on_plateau(
    optimizer: Optimizer,
    total_steps: int,
    monitor: str,
    mode: str,
    factor: float,
    patience: int,
) -> SchedulerConfig:
    """Multiply the rate by `factor` after `patience` epochs without improvement of `monitor`."""
    scheduler = ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)
    return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor}
