"""What a run prints on the console: the config at start, results and locations at the end."""

import logging
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from rich.tree import Tree

from chainrule.config.groups import config_groups
from chainrule.core import console


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a tree, one branch per group, interpolations resolved."""
    tree = Tree("config", guide_style="dim")
    ordered = [g for g in config_groups() if g in cfg]
    groups = ordered + [k for k in cfg if k not in ordered]
    for group in groups:
        value = cfg[group]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(group).add(text.rstrip())
    console.say(console.render(tree))


def print_results(title: str, metrics: Mapping[str, float], locations: Mapping[str, str | Path | None]) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{float(metrics[name]):.4f}")
    console.say(console.render(table))
    for label, path in locations.items():
        if path:
            console.say(f"{label}: {path}")


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
