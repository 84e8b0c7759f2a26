"""Search spaces: the YAML (or command-line) description of what a sweep varies, as Optuna distributions,
and the Hydra overrides that put one sampled point into a run's config.

In YAML each searched key maps to a spec whose `type` picks the distribution and whose other keys are
that distribution's constructor arguments:

    params:
      optim.lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}  # FloatDistribution(low, high, log, step)
      model.depth: {type: int, low: 1, high: 4}                     # IntDistribution(low, high, log, step)
      model.activation: {type: categorical, choices: [relu, gelu]}  # CategoricalDistribution(choices)

Keys may be dotted (`optim.lr`) or nested (`optim: {lr: ...}`); a command-line override cannot contain a
dotted key, so both spell the same parameter.
"""

import inspect
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from chainrule.core.errors import ConfigError, unknown_choice

DISTRIBUTIONS: dict[str, type[BaseDistribution]] = {
    "float": FloatDistribution,
    "int": IntDistribution,
    "categorical": CategoricalDistribution,
}

SearchSpace = dict[str, BaseDistribution]


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    specs: dict[str, Mapping[str, Any]] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if not isinstance(value, Mapping):
            raise ConfigError(f"search space entry '{name}' must be a mapping with a 'type' "
                              f"({', '.join(DISTRIBUTIONS)}), got {value!r}")
        specs.update({name: value} if "type" in value else _flatten(value, f"{name}."))
    return specs


def distribution(name: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """The Optuna distribution of one `{type: ..., **constructor arguments}` spec; `name` is for errors."""
    kind = spec["type"]
    if kind not in DISTRIBUTIONS:
        raise unknown_choice(f"search space type of '{name}'", str(kind), list(DISTRIBUTIONS))
    cls = DISTRIBUTIONS[kind]
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"search space entry '{name}' ({kind}) does not take {', '.join(unknown)}; "
                          f"it takes: {', '.join(accepted)}")
    if kind == "categorical":
        kwargs["choices"] = list(kwargs.get("choices") or [])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"search space entry '{name}': {error}") from None


def from_params(params: Mapping[str, Any] | None) -> SearchSpace:
    """The search space of the sweeper's `params` (dotted or nested keys)."""
    return {name: distribution(name, spec) for name, spec in _flatten(params or {}).items()}


def from_sweep_override(override: Override) -> BaseDistribution:
    """A Hydra sweep override as a distribution: `a,b,c` (or `choice(...)`) is categorical,
    `range(start, stop, step)` an int range (stop excluded, as in Python), `interval(low, high)` a float
    range, log-uniform when tagged: `tag(log, interval(1e-4, 1e-1))`."""
    sweep = override.value()
    name = override.get_key_element()
    log = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return distribution(name, {"type": "categorical", "choices": list(sweep.list)})
    if isinstance(sweep, RangeSweep):
        step = sweep.step or 1
        if any(isinstance(v, float) for v in (sweep.start, sweep.stop, step)):
            raise ConfigError(f"'{name}': range() in an Optuna sweep takes integers; "
                              f"use interval(low, high) for a float range")
        high = sweep.start + step * ((sweep.stop - sweep.start - 1) // step)  # the last value range() gives
        return distribution(name, {"type": "int", "low": sweep.start, "high": high, "step": step, "log": log})
    if isinstance(sweep, IntervalSweep):
        ints = isinstance(sweep.start, int) and isinstance(sweep.end, int)
        return distribution(name, {"type": "int" if ints else "float", "low": sweep.start, "high": sweep.end,
                                   "log": log})
    raise ConfigError(f"'{override.input_line}' is not a sweep an Optuna sweep understands; "
                      f"use a,b,c or choice(...), range(...), interval(...) or tag(log, interval(...))")


def grid(space: SearchSpace) -> dict[str, list[Any]]:
    """Every value of each parameter, for Optuna's GridSampler: categorical choices, stepped int ranges and
    stepped float ranges. A continuous or log range has no grid."""
    values: dict[str, list[Any]] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            values[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            values[name] = [float(v) for v in np.linspace(dist.low, dist.high, count)]
        else:
            raise ConfigError(f"the grid sampler needs a finite set of values for '{name}': give it a step "
                              f"(type: int or float with step) or make it categorical")
    return values


def grid_size(space: SearchSpace) -> int:
    return math.prod(len(v) for v in grid(space).values())


def override_value(value: Any) -> str:
    """A Python value as Hydra override syntax (strings always quoted: `1e-3` unquoted would be a float)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # Inside Hydra quotes a backslash escapes only a quote or another backslash before a quote (or the end).
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def overrides(params: Mapping[str, Any]) -> list[str]:
    """`key=value` Hydra overrides that set each sampled parameter."""
    return [f"{name}={override_value(value)}" for name, value in params.items()]
