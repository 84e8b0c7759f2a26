"""Shared pieces of the benchmarks: workloads built from chainrule's own configs, timing, and results."""

import datetime as dt
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from chainrule.config.groups import config_dir

RESULTS = Path(__file__).parent / "RESULTS.md"
# Peak dense bf16 tensor-core FLOP/s, for MFU (H100 SXM: 989 TFLOP/s; H200 has the same compute).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_flops() -> float | None:
    name = device_name()
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def compose_run(*overrides: str, output_dir: str = "/tmp/chainrule-bench") -> DictConfig:
    """The config chainrule-train would build for these overrides (outside a Hydra app)."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.output_dir = output_dir
    return cfg


@dataclass
class Window:
    """Seconds and optimizer steps of one timed window."""

    seconds: float
    steps: int

    @property
    def step_time(self) -> float:
        return self.seconds / self.steps


class StepTimer(L.Callback):
    """Times optimizer steps `warmup` .. `warmup + steps` of a Lightning fit (GPU-synchronized)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.start = 0.0
        self.window: Window | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.warmup:
            synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.warmup + self.steps:
            synchronize()
            self.window = Window(time.perf_counter() - self.start, self.steps)


def steps_for(seconds: float, step_time: float) -> int:
    return max(3, round(seconds / step_time))


def interleave(runs: dict[str, Callable[[], Window]], repeats: int) -> dict[str, list[Window]]:
    """Run each measurement once per repeat, in turn (A B A B ...), so drifts hit all alike."""
    windows: dict[str, list[Window]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            windows[name].append(run())
    return windows


def median_step_time(windows: list[Window]) -> float:
    return statistics.median(w.step_time for w in windows)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """Print a Markdown table (last thing a benchmark prints) and return it."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def append_results(table: str, notes: str = "") -> None:
    versions = f"torch {torch.__version__}, lightning {L.__version__}"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as f:
        f.write(f"\n{table}\n\n_{stamp}; {device_name()}; {versions}.{(' ' + notes) if notes else ''}_\n")
