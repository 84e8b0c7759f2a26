"""Step-time cost of the default gradient logging (W&B gradient histograms, plus any gradient-statistics
callback in the default callbacks), measured in one process with interleaved windows.

    PYTHONPATH=src python benchmarks/wandb_overhead.py [--steps 3000] [--windows 3] [override ...]

Each window trains the default experiment for `--steps` optimizer steps, alternately with the default
config ("default") and with gradient logging off ("no gradient logging": logger.wandb.watch=null and
the gradient callbacks removed). A step's time is the wall time between the ends of two consecutive
training batches of one epoch, so data loading, hooks and logging all count; epoch boundaries
(validation is off, but data loaders restart) are left out. W&B runs offline into a temporary directory.
Extra arguments are Hydra overrides applied to both variants (e.g. model.width=1024).
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from chainrule import builders
from chainrule.hydra_app import config_dir
from chainrule.loggers.wandb import finish_active_run

# Callbacks that only print or act between epochs, kept out of both variants.
QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "callbacks.early_stopping=null",
         "callbacks.model_checkpoint=null", "callbacks.metric_plots=null", "+trainer.enable_checkpointing=false",
         "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "+trainer.limit_val_batches=0",
         "+trainer.num_sanity_val_steps=0", "test=false"]


class StepTimer(L.Callback):
    """Wall time between consecutive training batch ends within an epoch, in seconds."""

    def __init__(self) -> None:
        self.intervals: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now


def gradient_callbacks(cfg: DictConfig) -> list[str]:
    """Names of default callbacks that compute gradient statistics (their target mentions "grad")."""
    return [name for name, c in (cfg.callbacks or {}).items() if c is not None and "grad" in c._target_.lower()]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # the config interpolates ${hydra:...}
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]  # as in a run: the app's config holds no `hydra` node
    return cfg


def hook_cost_per_step(task: L.LightningModule, steps: int) -> float | None:
    """Seconds per step spent in W&B's gradient hooks, called directly `steps` times on the last gradients
    (histograms included, every `watch_log_freq` calls): the cost without timing noise from the rest of
    the step. None when no parameter carries a hook."""
    hooked = [(p, list(p._backward_hooks.values())) for p in task.parameters()
              if p.grad is not None and p._backward_hooks]
    if not hooked:
        return None
    start = time.perf_counter()
    for _ in range(steps):
        for param, hooks in hooked:
            for hook in hooks:
                hook(param.grad)
    return (time.perf_counter() - start) / steps


def run_window(overrides: list[str], output_dir: Path) -> tuple[list[float], float | None]:
    """Step times of one training window, and the directly measured per-step cost of W&B's hooks."""
    cfg = compose_config(overrides, output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    timer = StepTimer()
    trainer = builders.build_trainer(cfg, builders.build_callbacks(cfg) + [timer], builders.build_loggers(cfg))
    try:
        trainer.fit(task, datamodule=datamodule)
        # Before finishing: the hooks log into the run. Three periods, so histograms are counted fairly.
        hooks = hook_cost_per_step(task, steps=3 * cfg.logger.wandb.watch_log_freq)
    finally:
        finish_active_run(exit_code=0)
    return timer.intervals, hooks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps per window")
    parser.add_argument("--windows", type=int, default=3, help="windows per variant, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least noise)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both variants")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")

    base = [*QUIET, f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1", *args.overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"), \
            tempfile.TemporaryDirectory() as tmp:
        defaults = compose_config(base, Path(tmp))
        off = ["logger.wandb.watch=null", *(f"callbacks.{name}=null" for name in gradient_callbacks(defaults))]
        variants = {"no gradient logging": base + off, "default": base}
        watch = f"watch={defaults.logger.wandb.watch}, every {defaults.logger.wandb.watch_log_freq} steps"
        times: dict[str, list[list[float]]] = {name: [] for name in variants}
        hook_costs: list[float] = []
        for window in range(args.windows):
            for name, overrides in variants.items():
                intervals, hooks = run_window(overrides, Path(tmp) / f"{name.replace(' ', '_')}-{window}")
                times[name].append(intervals)
                hook_costs += [hooks] if hooks is not None and name == "default" else []

    means = {name: [statistics.fmean(w) for w in windows] for name, windows in times.items()}
    ratios = [d / o for d, o in zip(means["default"], means["no gradient logging"])]
    print(f"\nstep time, {args.windows} interleaved windows of {args.steps} steps; default: {watch}; "
          f"removed besides W&B watch: {gradient_callbacks(defaults) or 'none'}")
    print(f"{'variant':<22}{'mean ms/step':>14}{'median ms':>11}{'windows (mean ms)':>34}")
    for name, windows in times.items():
        every = [t for w in windows for t in w]
        per_window = " ".join(f"{1e3 * m:.3f}" for m in means[name])
        print(f"{name:<22}{1e3 * statistics.fmean(every):>14.3f}{1e3 * statistics.median(every):>11.3f}"
              f"{per_window:>34}")
    print(f"overhead of default gradient logging: {100 * (statistics.median(ratios) - 1):+.2f}% "
          f"(median of per-window ratios {', '.join(f'{r:.4f}' for r in ratios)}; target <= +1%)")
    if hook_costs:
        baseline = statistics.median([t for w in times["no gradient logging"] for t in w])
        cost = statistics.median(hook_costs)
        print(f"W&B gradient hooks alone, called directly: {1e6 * cost:.1f} us/step = "
              f"{100 * cost / baseline:.3f}% of the median step without gradient logging")


if __name__ == "__main__":
    main()
