"""`init_from=<checkpoint, run directory or latest>`: a new run that starts from another run's weights.

Only the model's weights are loaded: the optimizer, the schedule, the loop's position and the metrics
start afresh, and the run gets a directory of its own (unlike `resume=` and `ckpt_path=`, which continue
a training state). Keys are compared one by one and reported; with `init_from_strict=false` the keys
that do not fit (a new head for other classes, a new module) keep their fresh initialization.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.table import Table
from torch import nn

from chainrule.checkpointing.discovery import checkpoint_candidates, checkpoint_to_use
from chainrule.checkpointing.io import load_checkpoint
from chainrule.core import console
from chainrule.core.errors import CheckpointError, ConfigError

MODEL_PREFIX = "model."  # the Task keeps the model as `self.model`: its keys in a checkpoint's state_dict
SHOWN = 5  # keys named per kind in the report and the error


@dataclass
class KeyReport:
    """How the keys of a checkpoint's model and of the model to initialize compare."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def rows(self) -> list[tuple[str, list[str]]]:
        shapes = [f"{k} {list(a)} -> {list(b)}" for k, (a, b) in self.mismatched.items()]
        return [("matched (loaded)", self.matched), ("missing (kept as initialized)", self.missing),
                ("unexpected (ignored)", self.unexpected), ("shape-mismatched (kept as initialized)", shapes)]

    def summary(self) -> str:
        """The keys that do not fit, by kind (`2 shape-mismatched (head.weight [10, 64] -> [4, 64], ...)`)."""
        return "; ".join(f"{len(keys)} {kind.split(' ')[0]} ({', '.join(_shown(keys))})"
                         for kind, keys in self.rows()[1:] if keys)


def compare(model: dict[str, torch.Tensor], checkpoint: dict[str, torch.Tensor]) -> KeyReport:
    report = KeyReport()
    for key, value in model.items():
        if key not in checkpoint:
            report.missing.append(key)
        elif tuple(checkpoint[key].shape) != tuple(value.shape):
            report.mismatched[key] = (tuple(checkpoint[key].shape), tuple(value.shape))
        else:
            report.matched.append(key)
    report.unexpected = [key for key in checkpoint if key not in model]
    return report


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model's tensors in a chainrule checkpoint, keyed as in the model's own state_dict."""
    state = load_checkpoint(path).get("state_dict")
    weights = {k.removeprefix(MODEL_PREFIX): v for k, v in (state or {}).items()
               if k.startswith(MODEL_PREFIX)}
    if not weights:
        raise CheckpointError(f"{path} holds no model weights (state_dict['model.*']); pass a checkpoint "
                              f"written by chainrule-train")
    return weights


def load_weights(model: nn.Module, path: Path, strict: bool) -> KeyReport:
    """Copy the weights of checkpoint `path` into `model` and report the keys. Strict: every key must
    match in name and shape, else CheckpointError (nothing loaded); otherwise only matching keys load."""
    weights = model_weights(path)
    report = compare(model.state_dict(), weights)
    if strict and not report.exact:
        raise CheckpointError(f"init_from: the weights in {path} do not fit this model: {report.summary()}; "
                              f"pass init_from_strict=false to load the keys that fit and keep the others "
                              f"freshly initialized (e.g. a new head)")
    if not report.matched:
        raise CheckpointError(f"init_from: no key of {path} fits this model ({report.summary()}); "
                              f"pass a checkpoint of the same model")
    model.load_state_dict({k: weights[k] for k in report.matched}, strict=False)
    print_report(report, path)
    return report


def print_report(report: KeyReport, path: Path) -> None:
    table = Table(title=f"weights from {path}", show_header=True, box=None, pad_edge=False)
    table.add_column("keys")
    table.add_column("count", justify="right")
    table.add_column("which")
    for i, (kind, keys) in enumerate(report.rows()):
        table.add_row(kind, str(len(keys)), ", ".join(_shown(keys)) if i else "")  # matched: all, usually
    console.say(console.render(table))


def _shown(keys: list[str]) -> list[str]:
    return keys[:SHOWN] + ([f"... {len(keys) - SHOWN} more"] if len(keys) > SHOWN else [])


def initialize_from(cfg: DictConfig, model: nn.Module) -> KeyReport | None:
    """Apply `cfg.init_from` to `model` of a new run. A run that continues (its directory holds
    checkpoints: resumed or requeued) takes its weights from its own checkpoint instead."""
    value = cfg.get("init_from")
    if not value:
        return None
    if cfg.get("ckpt_path"):
        raise ConfigError(f"init_from={value} starts a new run from weights only, ckpt_path={cfg.ckpt_path} "
                          f"continues a training state; pass one of them")
    if not isinstance(cfg.get("init_from_strict"), bool):
        raise ConfigError(f"init_from_strict={cfg.get('init_from_strict')!r} is not valid: use true or false")
    if checkpoint_candidates(cfg.paths.output_dir):
        console.say(f"init_from={value}: not applied, the run continues from its own checkpoint")
        return None
    return load_weights(model, checkpoint_to_use(value, cfg.paths.log_dir, key="init_from"),
                        cfg.init_from_strict)
