"""Optimizer construction: parameter groups with and without weight decay."""

from collections.abc import Callable
from functools import partial

from torch import nn
from torch.optim import Optimizer


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices and conv kernels get `weight_decay`; biases and norm scales (1-D) get none.

    Decaying biases and norm gains pulls them towards 0, which changes what the layer can represent
    rather than regularizing it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(factory: Callable[..., Optimizer], model: nn.Module) -> Optimizer:
    """Call a partially-configured optimizer (`optim/*.yaml`) on `model`'s parameter groups."""
    weight_decay = factory.keywords.get("weight_decay", 0.0) if isinstance(factory, partial) else 0.0
    return factory(param_groups(model, weight_decay))
