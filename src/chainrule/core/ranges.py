"""The values a config key may take, checked on the composed config before anything heavy loads, and by
code that takes the same values without a config (chainrule.training.gradcheck).

Types are checked against the constructors themselves (chainrule.config.validation), which needs their
modules and so torch. Ranges are kept here instead, by config key, so that a learning rate of 0 or a
dropout of 1.5 is refused in about a second, before a process starts. A key applies wherever the
composed config has it (`model.dropout` for every model that has a dropout).
"""

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from chainrule.core.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """low/high bounds (None: unbounded), each inclusive unless `open_*`; `null_ok`: null means off."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    null_ok: bool = False
    example: str = ""
    meaning: str = ""

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.null_ok
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.open_high and value == self.high)))

    def describe(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        interval = f"{'(' if self.open_low or self.low is None else '['}{low}, {high}{')' if self.open_high or self.high is None else ']'}"
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} in {interval}" + (" or null" if self.null_ok else "") + (f" ({self.meaning})" if self.meaning else "")


POSITIVE_INT = Range(low=1, integer=True)
PROBABILITY = Range(low=0, high=1, open_high=True, meaning="a probability")
FRACTION = Range(low=0, high=1)

RANGES: dict[str, Range] = {
    "seed": Range(low=0, integer=True, example="seed=12345"),
    "data.batch_size": Range(low=1, integer=True, meaning="samples per optimizer step, all devices together",
                             example="data.batch_size=64"),
    "data.val_fraction": Range(low=0, high=1, open_high=True, example="data.val_fraction=0.15"),
    "data.test_fraction": Range(low=0, high=1, open_high=True, example="data.test_fraction=0.15"),
    "data.num_workers": Range(low=0, integer=True, example="data.num_workers=4"),
    "data.folds": Range(low=2, integer=True, null_ok=True, meaning="folds of k-fold cross-validation",
                        example="data.folds=5"),
    "data.fold": Range(low=0, integer=True, null_ok=True, meaning="the validation fold, 0..data.folds-1",
                       example="data.fold=0"),
    "data.prefetch_factor": Range(low=1, integer=True, meaning="batches each loader worker keeps ready",
                                  example="data.prefetch_factor=2"),
    "data.seq_len": POSITIVE_INT,
    "data.image_size": POSITIVE_INT,
    "data.samples_per_epoch": Range(low=1, integer=True, null_ok=True, example="data.samples_per_epoch=6400"),
    "data.eval_windows": Range(low=1, integer=True, null_ok=True, example="data.eval_windows=256"),
    "model.width": POSITIVE_INT,
    "model.depth": Range(low=0, integer=True, example="model.depth=2"),
    "model.hidden": POSITIVE_INT,
    "model.latent_dim": POSITIVE_INT,
    "model.n_layer": POSITIVE_INT,
    "model.n_head": POSITIVE_INT,
    "model.n_embd": POSITIVE_INT,
    "model.dropout": PROBABILITY,
    "loss.label_smoothing": FRACTION,
    "optim.lr": Range(low=0, open_low=True, meaning="the learning rate", example="optim.lr=1e-3"),
    "optim.weight_decay": Range(low=0, example="optim.weight_decay=0.01"),
    "optim.momentum": Range(low=0, high=1, open_high=True),
    "optim.alpha": Range(low=0, high=1, open_high=True),
    "scheduler.warmup_fraction": FRACTION,
    "scheduler.min_lr_ratio": FRACTION,
    "scheduler.pct_start": Range(low=0, high=1, open_low=True, open_high=True),
    "scheduler.div_factor": Range(low=0, open_low=True),
    "scheduler.final_div_factor": Range(low=0, open_low=True),
    "scheduler.factor": Range(low=0, high=1, open_low=True, open_high=True),
    "scheduler.patience": Range(low=0, integer=True),
    "scheduler.step_size": POSITIVE_INT,
    "scheduler.gamma": Range(low=0, high=1, open_low=True),
    "task.l1_weight": Range(low=0),
    "trainer.max_epochs": Range(low=-1, integer=True, null_ok=True, meaning="-1: no limit"),
    "trainer.max_steps": Range(low=-1, integer=True, meaning="-1: no limit"),
    "trainer.num_nodes": POSITIVE_INT,
    "trainer.strategy.tensor_parallel_size": Range(
        low=1, integer=True, meaning="ranks per tensor-parallel group",
        example="trainer.strategy.tensor_parallel_size=2"),
    "trainer.accumulate_grad_batches": Range(low=1, integer=True, meaning="micro-batches per optimizer step",
                                             example="trainer.accumulate_grad_batches=1"),
    "trainer.gradient_clip_val": Range(low=0, open_low=True, null_ok=True,
                                       meaning="the largest gradient norm (or value); null: no clipping",
                                       example="trainer.gradient_clip_val=1.0"),
    "trainer.log_every_n_steps": POSITIVE_INT,
    "trainer.check_val_every_n_epoch": Range(low=1, integer=True, null_ok=True),
    "callbacks.early_stopping.patience": Range(low=0, integer=True),
    "callbacks.checkpoints.save_top_k": Range(low=0, integer=True),
    "tolerance": Range(low=0, meaning="the largest max abs difference of an export from the eager model",
                       example="tolerance=1e-5"),
    "batch_size": Range(low=2, integer=True, example="batch_size=16",
                        meaning="samples of the export's parity check (the batch dimension is exported as "
                                "variable, which one sample cannot show)"),
    "gradcheck.batch_size": POSITIVE_INT,
    "gradcheck.max_elements": POSITIVE_INT,
    "gradcheck.eps": Range(low=0, high=1, open_low=True, meaning="the finite-difference step",
                           example="gradcheck.eps=1e-5"),
    "gradcheck.threshold": Range(low=0, open_low=True, meaning="the largest relative error that passes",
                                 example="gradcheck.threshold=1e-6"),
    "gradcheck.input_jitter": Range(low=0),
}


def _present(cfg: DictConfig, key: str) -> Iterator[Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, (DictConfig, Mapping)) or part not in node:
            return
        node = node[part]
    yield node


def check_value(key: str, value: Any) -> None:
    """Raise ConfigError when `value` is outside the range of `key` (a key of RANGES)."""
    allowed = RANGES[key]
    if not allowed.admits(value):
        example = f", e.g. {allowed.example}" if allowed.example else ""
        raise ConfigError(f"{key}={value!r} is not valid: use {allowed.describe()}{example}")


def check_ranges(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key of RANGES whose value in `cfg` is out of its range."""
    for key in RANGES:
        for value in _present(cfg, key):
            check_value(key, OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value)
