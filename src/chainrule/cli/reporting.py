"""What a run tells a person: a header of one screen when it starts, a summary when it ends, and the
whole config only on request (`print_config=true`; it is always saved in `<run dir>/.hydra/`).

Everything goes through chainrule.core.console, so the console and the run's `train.log` get the same
lines; paths and commands are never wrapped, so each can be copied from one line.
"""

import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from rich.tree import Tree

from chainrule.config.groups import config_groups
from chainrule.core import console


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a tree, one branch per group, interpolations resolved."""
    tree = Tree("config", guide_style="dim")
    ordered = [g for g in config_groups() if g in cfg]
    for group in ordered + [k for k in cfg if k not in ordered]:
        value = cfg[group]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(group).add(text.rstrip())
    console.say(console.render(tree))


def choices(cfg: DictConfig) -> dict[str, str]:
    """The option chosen for each config group (`data: digits`), as Hydra recorded it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {group: str(option) for group, option in HydraConfig.get().runtime.choices.items()
            if option is not None and not group.startswith("hydra")}


def print_header(cfg: DictConfig, datamodule: Any, task: L.LightningModule, trainer: L.Trainer) -> None:
    """One screen: what runs, where it writes, on what data and hardware."""
    chosen = choices(cfg)
    params = sum(p.numel() for p in task.parameters())
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    lines = [
        f"chainrule-train {chosen.get('experiment') or 'default experiment'} ({cfg.name})",
        f"run directory: {cfg.paths.output_dir}",
        "data: " + _data_line(chosen.get("data", "?"), datamodule, cfg),
        f"model: {chosen.get('model', '?')} ({_count(params)} parameters"
        + (f", {_count(trainable)} trainable" if trainable != params else "") + f"), task: {chosen.get('task')}, "
        f"loss: {chosen.get('loss')}",
        f"optimizer: {chosen.get('optim')} (lr {cfg.optim.get('lr')}), schedule: {chosen.get('scheduler')}, "
        f"precision: {cfg.trainer.precision}",
        f"devices: {trainer.world_size} x {type(trainer.accelerator).__name__.removesuffix('Accelerator').lower()}"
        f" ({trainer.num_nodes} node{'s' if trainer.num_nodes > 1 else ''}), up to "
        + (f"{trainer.max_steps} steps" if trainer.max_steps not in (-1, None) else f"{trainer.max_epochs} epochs"),
        "loggers: " + (", ".join(_logger_line(lg) for lg in trainer.loggers) or "none"),
    ]
    console.say("\n".join(lines))


def _data_line(name: str, datamodule: Any, cfg: DictConfig) -> str:
    sizes = getattr(datamodule, "split_sizes", None)
    shape = getattr(datamodule, "input_shape", None)
    classes = getattr(datamodule, "num_classes", None)
    parts = [f"global batch {cfg.data.get('batch_size')}"]
    if callable(sizes):
        parts.insert(0, " / ".join(f"{n:,} {split}" for split, n in sizes().items()) + " samples")
    if shape:
        parts.append("input " + "x".join(map(str, shape)))
    if classes:
        parts.append(f"{classes} classes")
    return f"{name} ({', '.join(parts)})"


def _logger_line(logger: Any) -> str:
    name = type(logger).__name__.removesuffix("Logger").removeprefix("Continuing")
    describe = getattr(logger, "describe", None)  # Lightning's stand-ins answer every call with None
    return (describe() if callable(describe) else None) or name


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def print_summary(cfg: DictConfig, trainer: L.Trainer, metrics: Mapping[str, float], started: float,
                  stopped: str | None, best: str | None) -> None:
    """The end of a run: its metrics, why training stopped, where everything is, and what to type next."""
    table = Table(show_header=True, box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(k for k in metrics if k.startswith(("val/", "test/"))):
        table.add_row(name, f"{float(metrics[name]):.4f}")
    run_dir = Path(cfg.paths.output_dir)
    # a file, or a folder under trainer=fsdp
    last = next((c.last_model_path for c in trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")),
                None)
    lines = [console.render(table)] if table.row_count else []
    lines += [
        f"training stopped: {stopped}" if stopped else "",
        f"time: {_duration(time.monotonic() - started)}",
        f"run directory: {run_dir}",
        f"best checkpoint: {best}" if best else "",
        f"last checkpoint: {last}" if last else "",
        "continue or extend: "
        + shlex.join(["chainrule-train", f"resume={run_dir}", f"trainer.max_epochs={2 * (trainer.max_epochs or 1)}"]),
    ]
    console.say("\n".join(line for line in [*lines, *logger_hints(trainer)] if line))


def logger_hints(trainer: L.Trainer) -> list[str]:
    """What each logger says to do with its run afterwards (upload it, open it)."""
    hints = [getattr(logger, "finish_hint", lambda: None)() for logger in trainer.loggers]
    return [hint for hint in hints if isinstance(hint, str) and hint]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s" if minutes else \
        f"{seconds}s"


def print_results(title: str, metrics: Mapping[str, float], locations: Mapping[str, Any],
                  hints: list[str] = ()) -> None:
    """A metrics table, where things are, and the loggers' hints: what commands other than training end
    with."""
    table = Table(title=title, show_header=True, box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{float(metrics[name]):.4f}")
    console.say("\n".join([console.render(table), *(f"{label}: {path}" for label, path in locations.items()
                                                     if path), *hints]))
