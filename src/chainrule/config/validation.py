"""Checks of the composed config before anything is built or any process is started.

Each problem becomes one ConfigError that names the key, what is wrong, and the fix. Most checks read
the constructors the config points at (`_target_`): their parameter names and type hints say which keys
exist and what values they take, so new components are checked without new code here.
"""

import difflib
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from chainrule.config.groups import BUILT_GROUPS
from chainrule.core.errors import ConfigError
from chainrule.launch.devices import check_global_batch, devices_per_node, tensor_parallel_size

# fp16 automatic mixed precision and Transformer Engine need a CUDA GPU; on a CPU Lightning silently
# trains in bf16 instead.
GPU_PRECISIONS = {"16-mixed", "16", "transformer-engine", "transformer-engine-float16"}


def validate(cfg: DictConfig, machine: bool = True, required: Sequence[str] = BUILT_GROUPS) -> None:
    """Raise ConfigError for the first problem found in `cfg` (a composed config).

    machine: also check the trainer against this machine (its GPUs and cores); off where the config is
    checked on one machine for another, e.g. before submitting a job from a login node.
    required: the groups the command builds from this config (chainrule-eval builds only its trainer
    and loggers; the model and data come from the checkpoint).
    """
    for group in required:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(
                f"{group} has no _target_: every {group} config names the class or function "
                f"to build (see conf/{group}/); pick an option with {group}=<name>"
            )
    if "seed" in cfg and (not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool)):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    for path, node in _targets(cfg):
        _check_target(path, node)
    if "optim" in cfg:
        _check_optimizer(cfg)
    if machine and "trainer" in cfg:  # commands without a trainer (export, consolidate) run here
        _check_machine(cfg.trainer)
    if "data" in required and "data" in cfg:  # a training batch (chainrule-predict only evaluates)
        check_global_batch(cfg, probe=machine)
    if "model" in cfg and tensor_parallel_size(cfg.trainer) > 1:
        _check_tensor_parallel_plan(cfg.model)


def _targets(node: Any, path: str = "") -> list[tuple[str, DictConfig]]:
    """Every config node with a `_target_`, with its dotted path."""
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node and path:
            found.append((path, node))
        for key in node:
            if isinstance(key, str) and not key.startswith("_") and key != "hydra":
                found += _targets(node._get_node(key), f"{path}.{key}" if path else key)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            found += _targets(node._get_node(i), f"{path}.{i}")
    return found


def _check_target(path: str, node: DictConfig) -> None:
    target = node._target_
    try:
        factory = get_object(target) if isinstance(target, str) else target
    except Exception as error:
        reason = (
            " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        )
        raise ConfigError(
            f"{path}._target_: cannot import '{target}' ({reason}); check the spelling, or "
            f"pick a config option instead"
        ) from None
    if not callable(factory):
        raise ConfigError(f"{path}._target_: '{target}' is not a class or function")
    params, open_ended = accepted_parameters(factory)
    values = OmegaConf.to_container(node, resolve=True)
    for key, value in values.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue
        if key not in params:
            if open_ended:
                continue
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"did you mean {path}.{close[0]}?" if close else f"valid keys: {', '.join(sorted(params))}"
            raise ConfigError(f"{path}.{key}: {target} has no argument '{key}'; {hint}")
        annotation = params[key]
        if isinstance(value, (str, int, float, bool)) and _matches(value, annotation) is False:
            raise ConfigError(
                f"{path}.{key}={value!r} is not valid: {target} expects {_describe(annotation)}"
            )


def accepted_parameters(factory: Callable) -> tuple[dict[str, Any], bool]:
    """The keyword parameters `factory` accepts, with their type hints, following `**kwargs` up a class
    hierarchy; and whether it still accepts any keyword after that (an unresolved `**kwargs`).

    Only chainrule's own classes are known to hand `**kwargs` to their base class; elsewhere they may
    go anywhere (Lightning's DDPStrategy passes them to DistributedDataParallel), so such a class
    accepts any keyword."""
    functions = (
        [c.__dict__["__init__"] for c in factory.__mro__ if "__init__" in c.__dict__ and c is not object]
        if inspect.isclass(factory)
        else [factory]
    )
    params: dict[str, Any] = {}
    for function in functions:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return params, True
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # unresolvable forward references: check names only
            hints = {}
        for name, p in signature.parameters.items():
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params.setdefault(name, hints.get(name, p.annotation))
        if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
            return params, False
        if not getattr(factory, "__module__", "").startswith("chainrule."):
            return params, True
    return params, True


def _matches(value: Any, annotation: Any) -> bool | None:
    """Whether a plain config value fits a type hint: True, False, or None when the hint is too rich to
    tell (then the constructor decides)."""
    if annotation in (inspect.Parameter.empty, Any):
        return None
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        results = [_matches(value, a) for a in typing.get_args(annotation)]
        return True if True in results else (False if all(r is False for r in results) else None)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return False
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or annotation in (list, tuple) or origin in (dict, Mapping):
        return False  # a plain value where a collection is expected
    return None


def _describe(annotation: Any) -> str:
    """`int`, `int or str`, `one of 'a', 'b'` (the literals of nested unions gathered in one list)."""
    members = _flatten(annotation)
    literals = [value for m in members if typing.get_origin(m) is Literal for value in typing.get_args(m)]
    others = [
        getattr(a, "__name__", str(a))
        for a in members
        if typing.get_origin(a) is not Literal and a is not type(None)
    ]
    if literals:
        others.append("one of " + ", ".join(repr(a) for a in literals))
    return " or ".join(others)


def _flatten(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _flatten(a)]
    return [annotation]


def _check_tensor_parallel_plan(model: DictConfig) -> None:
    """Tensor parallelism splits the layers a model's `tensor_parallel_plan()` names
    (chainrule.models.sharding); a model class without one cannot use it."""
    factory = get_object(model._target_) if isinstance(model.get("_target_"), str) else None
    if factory is not None and not hasattr(factory, "tensor_parallel_plan"):
        raise ConfigError(f"trainer.strategy.tensor_parallel_size > 1 splits the layers of a model's "
                          f"tensor-parallel plan, and {model._target_} declares none; use "
                          f"trainer.strategy.tensor_parallel_size=1 (FSDP alone), or model=gpt")


def _check_optimizer(cfg: DictConfig) -> None:
    """Let the optimizer check its own settings (learning rate, betas, ...) on a dummy parameter."""
    try:
        factory = instantiate(cfg.optim)
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"optim ({cfg.optim._target_}): {error}; the optimizer refuses these settings"
        ) from None


def _check_machine(trainer: DictConfig) -> None:
    """The devices, accelerator and precision asked for exist on this machine."""
    devices = trainer.get("devices", "auto")
    accelerator = str(trainer.get("accelerator", "auto"))
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; "
            f"use trainer=cpu (or trainer.accelerator=cpu)"
        )
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and gpus == 0)
    available, unit = (
        (gpus, "GPU(s)") if on_gpu else (os.cpu_count() or 1, "CPU cores") if on_cpu else (None, "")
    )
    count = devices_per_node(trainer, probe=False)
    if available is not None and count is not None and count > available:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {available} {unit}; "
            f"use trainer.devices={available} or fewer (or trainer.devices=auto)"
        )
    if available is not None and isinstance(devices, ListConfig):
        missing = [d for d in devices if not isinstance(d, int) or d >= available]
        if missing:
            raise ConfigError(
                f"trainer.devices={list(devices)}: device(s) {missing} do not exist; this machine "
                f"has {available} {unit}, numbered 0-{available - 1}"
            )
    precision = str(trainer.get("precision"))
    if on_cpu and precision in GPU_PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision} needs a CUDA GPU, but the trainer runs on the CPU "
            f"(fp16 mixed precision does not run there); use trainer.precision=bf16-mixed or "
            f"32-true, or a GPU trainer (trainer=gpu)"
        )


# Targets (of losses and metrics) that compare outputs with real values, and those that need classes.
VALUE_TARGETS = ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "MeanSquaredError", "MeanAbsoluteError",
                 "R2Score", "ExplainedVariance", "PearsonCorrCoef")
CLASS_TARGETS = ("CrossEntropyLoss", "BCEWithLogitsLoss", "NLLLoss", "Multiclass", "Multilabel", "Binary")


def check_targets(cfg: DictConfig, datamodule: Any) -> None:
    """Raise ConfigError when the loss or the task's metrics need class labels and the data has real-valued
    targets, or the other way round (before the task is built: some metrics cannot be built then)."""
    if cfg.task.get("target") != "label":
        return
    choices = _choices(cfg)
    classes = getattr(datamodule, "num_classes", None)
    metrics = [str(m.get("_target_", "")) for m in (cfg.task.get("metrics") or {}).values() if m is not None]
    for group, targets in (("loss", [str(cfg.loss.get("_target_", ""))]), ("task", metrics)):
        names = [t.rsplit(".", 1)[-1] for t in targets]
        if classes is not None and any(n in VALUE_TARGETS for n in names):
            what = "compares outputs with real-valued targets" if group == "loss" else "measures real values"
            fix = "loss=cross_entropy (or bce_with_logits)" if group == "loss" else "task=classification"
            raise ConfigError(f"{group}={choices[group]} {what}, but data={choices['data']} has class labels "
                              f"({classes} classes); use {fix}, or regression data, e.g. data=diabetes")
        if classes is None and any(n.startswith(CLASS_TARGETS) for n in names):
            fix = "loss=mse" if group == "loss" else "task=regression"
            raise ConfigError(f"{group}={choices[group]} needs class labels, but data={choices['data']} has "
                              f"real-valued targets; use {fix} (task=regression with loss=mse)")


def check_one_step(cfg: DictConfig, datamodule: Any, task: Any) -> None:
    """Raise ConfigError when the model's output and the loss do not fit the data (tried on two training
    samples, without gradients, leaving every random stream as it was)."""
    datamodule.setup("fit")
    train = getattr(datamodule, "splits", None)
    if train is None or len(train.train) == 0:
        return
    x, y = train.train.x[:2], train.train.y[:2]
    model = task.model
    training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng():
            model.eval()
            task.loss(model(x), x if task.target == "input" else y)
    except Exception as error:  # shape and dtype mismatches come as several exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        choices = _choices(cfg)
        raise ConfigError(
            f"data={choices['data']}, model={choices['model']}, task={choices['task']} and loss={choices['loss']} "
            f"do not fit together ({first}); pick options made for each other, e.g. an experiment= preset"
        ) from None
    finally:
        model.train(training)


def _choices(cfg: DictConfig) -> dict[str, str]:
    """The option chosen for each built group (`digits`), for messages; the target's name without Hydra."""
    from hydra.core.hydra_config import HydraConfig

    chosen = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    return {group: str(chosen.get(group) or cfg.get(group, {}).get("_target_", "?")).rsplit(".", 1)[-1]
            for group in BUILT_GROUPS}
