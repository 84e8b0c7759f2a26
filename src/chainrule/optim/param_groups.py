"""Optimizer construction: parameter groups with and without weight decay, and per-module learning rates."""

import difflib
import math
from collections.abc import Callable, Mapping
from functools import partial

from torch import nn
from torch.optim import Optimizer

from chainrule.core.errors import ConfigError


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                 lr_multipliers: Mapping[str, float] | None = None) -> list[dict]:
    """Matrices and conv kernels get `weight_decay`; biases and norm scales (1-D) get none. Parameters
    that do not require gradients (frozen) are in no group, so the optimizer keeps no state for them.

    Decaying biases and norm gains pulls them towards 0, which changes what the layer can represent
    rather than regularizing it.

    lr_multipliers: {module name: factor}; a parameter trains at `lr` x the factor of the longest module
    name that contains it (1 for the others), so that e.g. a pretrained backbone learns slower than a new
    head. Each (factor, decay) pair is one group with its own `lr`; schedules scale every group's rate
    by the same factor over time, which keeps the ratios.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not lr_multipliers:
        return [
            {"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0},
        ]
    if lr is None:
        raise ConfigError("task.lr_multipliers needs the optimizer's learning rate (optim.lr) to scale")
    check_multipliers(model, lr_multipliers)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in named:
        groups.setdefault((multiplier(name, lr_multipliers), p.ndim >= 2), []).append(p)
    ordered = sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1]))
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * factor,
             "lr_multiplier": factor} for (factor, decay), params in ordered]


def multiplier(parameter: str, lr_multipliers: Mapping[str, float]) -> float:
    """The factor of the longest module name in `lr_multipliers` that `parameter` (a dotted name) lies in."""
    matches = [m for m in lr_multipliers if parameter == m or parameter.startswith(f"{m}.")]
    return float(lr_multipliers[max(matches, key=len)]) if matches else 1.0


def check_multipliers(model: nn.Module, lr_multipliers: Mapping[str, float]) -> None:
    for name, factor in lr_multipliers.items():
        submodule(model, name, "task.lr_multipliers")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
                or factor <= 0:
            raise ConfigError(f"task.lr_multipliers.{name}={factor!r} is not valid: use a number > 0 (to "
                              f"stop a module from training, task.freeze=[{name}])")


def submodule(model: nn.Module, name: str, key: str) -> nn.Module:
    """The module of `model` called `name` (dotted, as in its state dict: `blocks.0`, `layer4`); `key` names
    the config key in the error when there is none."""
    try:
        return model.get_submodule(str(name))
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(str(name), names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else \
            f"its top-level modules: {', '.join(n for n, _ in model.named_children())}"
        raise ConfigError(f"{key}: the model has no module '{name}'; {hint}") from None


def build_optimizer(factory: Callable[..., Optimizer], model: nn.Module,
                    lr_multipliers: Mapping[str, float] | None = None) -> Optimizer:
    """Call a partially-configured optimizer (`optim/*.yaml`) on `model`'s parameter groups."""
    keywords = factory.keywords if isinstance(factory, partial) else {}
    groups = param_groups(model, keywords.get("weight_decay", 0.0), keywords.get("lr"), lr_multipliers)
    if not any(group["params"] for group in groups):
        raise ConfigError("every parameter of the model is frozen (task.freeze); leave some module to train")
    return factory(groups)
