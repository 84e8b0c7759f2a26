"""What each default callback and logger costs: the time spent in its own hooks (callbacks) or calls
(loggers) during the default digits run, attributed in the same run rather than read from differences
between runs, which on a step of a few milliseconds drown in noise.

Each hook of each callback and each logger's logging calls are timed. Time inside the timed window of
training steps is reported per optimizer step; the rest (setup, the start and end of the fit) once per
run; a logger's calls from a callback count for the logger. The step itself is timed by the window, so every share is of the same measured step. Lightning's
own loop, the model and the data loader make up the remainder.

    python -m benchmarks.callback_costs                  # the default run, ~30 s on 2 CPU cores (or a GPU)
    python -m benchmarks.callback_costs --preset tiny    # seconds; CI keeps the script working
"""

import argparse
import functools
import inspect
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger

from benchmarks.common import StepTimer, append_results, compose_run, device, print_table, synchronize
from chainrule.config import builders

# As benchmarks.step_overhead's default digits workload, but with the progress display on: it is a default
# callback too (lines to a pipe, as here; a bar in a terminal).
PIPELINE = ("trainer.limit_val_batches=0", "test=false")
LOGGER_CALLS = ("log_metrics", "log_hyperparams", "log_graph", "save", "finalize", "after_save_checkpoint")
WARMUP = 5


class Attribution:
    """Seconds spent in each component, inside the timed window of steps or outside it."""

    def __init__(self, timer: StepTimer):
        self.timer = timer
        self.in_window: dict[str, float] = defaultdict(float)
        self.outside: dict[str, float] = defaultdict(float)
        self._open: list[float] = []  # seconds spent in timed calls nested in each open call

    def _inside(self) -> bool:
        return self.timer.start > 0 and self.timer.window is None

    def wrap(self, name: str, method: Callable) -> Callable:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            inside = self._inside()
            start = time.perf_counter()
            self._open.append(0.0)
            try:
                return method(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                nested = self._open.pop()
                if self._open:  # a logger called by a callback: its time is the logger's, not the callback's
                    self._open[-1] += spent
                (self.in_window if inside and self._inside() else self.outside)[name] += spent - nested

        return timed

    def instrument_callback(self, name: str, callback: L.Callback) -> None:
        for hook, base in inspect.getmembers(L.Callback, inspect.isfunction):
            if hook.startswith("on_") or hook in ("setup", "teardown", "state_dict", "load_state_dict"):
                if getattr(type(callback), hook) is not base:  # the callback's own hook
                    setattr(callback, hook, self.wrap(name, getattr(callback, hook)))

    def instrument_logger(self, name: str, logger: Logger) -> None:
        for call in LOGGER_CALLS:
            if hasattr(logger, call):
                setattr(logger, call, self.wrap(name, getattr(logger, call)))


def callback_names(cfg: Any, callbacks: list[L.Callback]) -> list[str]:
    """The config key of each configured callback; the ones chainrule always adds by their class."""
    configured = [key for key, value in (cfg.get("callbacks") or {}).items() if value is not None]
    return [configured[i] if i < len(configured) else type(c).__name__ for i, c in enumerate(callbacks)]


def measure(steps: int) -> tuple[float, dict[str, float], dict[str, float], float]:
    """One default run of `steps` timed steps: (seconds per step, seconds per step in each component,
    seconds outside the window in each component, seconds of the whole fit)."""
    cfg = compose_run(*PIPELINE, f"trainer.accelerator={device().type}")
    cfg.trainer.max_steps = WARMUP + steps
    cfg.trainer.max_epochs = -1
    torch.manual_seed(cfg.seed)
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    timer = StepTimer(WARMUP, steps)
    attribution = Attribution(timer)
    callbacks = builders.build_callbacks(cfg)
    assert len(callbacks) >= len([v for v in cfg.callbacks.values() if v is not None])  # none switched off
    for name, callback in zip(callback_names(cfg, callbacks), callbacks, strict=True):
        attribution.instrument_callback(name, callback)
    loggers = builders.build_loggers(cfg)
    for logger in loggers:
        attribution.instrument_logger(f"logger: {type(logger).__name__}", logger)
    trainer = builders.build_trainer(cfg, callbacks=[timer, *callbacks], loggers=loggers)
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    synchronize()
    fit_s = time.perf_counter() - start
    assert timer.window is not None, "the timed window did not complete"
    per_step = {name: seconds / steps for name, seconds in attribution.in_window.items()}
    return timer.window.step_time, per_step, dict(attribution.outside), fit_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "full"], default="full")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    tiny = args.preset == "tiny"
    measure(20)  # warm: imports, first W&B run, allocator
    step, per_step, outside, fit_s = measure(30 if tiny else 3000)
    names = sorted(set(per_step) | set(outside), key=lambda n: -per_step.get(n, 0.0))
    rows = [[name, f"{per_step.get(name, 0.0) * 1e3:.3f}", f"{per_step.get(name, 0.0) / step:.1%}",
             f"{outside.get(name, 0.0):.2f}"] for name in names]
    rest = step - sum(per_step.values())
    rows += [["the rest: Lightning's loop, model, data loader", f"{rest * 1e3:.3f}", f"{rest / step:.1%}", ""],
             ["the whole step (timed window); the whole fit", f"{step * 1e3:.3f}", "100.0%", f"{fit_s:.2f}"]]
    table = print_table(
        f"Cost of each default callback and logger (default digits run, {args.preset})",
        ["component", "ms per step", "share of the step", "s once per run"], rows,
    )
    if not args.no_record and not tiny:
        append_results(table)


if __name__ == "__main__":
    main()
