"""What a run prints on the console: the config at start, results and locations at the end."""

import logging
from collections.abc import Mapping
from pathlib import Path

import rich
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from rich.tree import Tree

TOP_GROUPS = ("data", "model", "task", "loss", "optim", "scheduler", "trainer", "callbacks", "logger", "paths")


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a tree, one branch per group, interpolations resolved."""
    tree = Tree("config", guide_style="dim")
    groups = [g for g in TOP_GROUPS if g in cfg] + [k for k in cfg if k not in TOP_GROUPS]
    for group in groups:
        value = cfg[group]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(f"[bold]{group}[/bold]").add(text.rstrip())
    rich.print(tree)


@rank_zero_only
def print_results(title: str, metrics: Mapping[str, float], locations: Mapping[str, str | Path | None]) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{float(metrics[name]):.4f}")
    rich.print(table)
    for label, path in locations.items():
        if path:
            rich.print(f"{label}: {path}")


def route_lightning_logs_through_root() -> None:
    """Lightning gives its `lightning` logger a console handler of its own *and* lets records propagate
    to the root logger, which Hydra configures (console + the run's log file): every message would print
    twice. Keep the root's handlers, which also write the log file."""
    if not logging.getLogger().handlers:
        return
    lightning_logger = logging.getLogger("lightning")
    for handler in list(lightning_logger.handlers):
        if type(handler) is logging.StreamHandler:
            lightning_logger.removeHandler(handler)
