"""Step-time cost of the default gradient logging (W&B gradient histograms, plus any gradient-statistics
callback in the default callbacks), measured in one process with interleaved windows.

    PYTHONPATH=src python benchmarks/wandb_overhead.py [--steps 1000] [--windows 6] [override ...]

Each window trains the default experiment for `--steps` optimizer steps, alternately with the default
config ("default") and with gradient logging off ("no gradient logging": logger.wandb.watch=null and
the gradient callbacks removed). A step's time is the wall time between the ends of two consecutive
training batches of one epoch, so data loading, hooks and logging all count; epoch boundaries
(validation is off, but data loaders restart) are left out. W&B runs offline into a temporary directory.
Extra arguments are Hydra overrides applied to both variants (e.g. model.width=1024).

On a busy machine whole windows slow down; the fastest windows are the least disturbed. The cost of
W&B's hooks is also measured directly (calling them on real gradients), which no load can blur.
"""

import argparse
import os
import statistics
import tempfile
import time
import warnings
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
QUIET = [
    *(f"callbacks.{name}=null" for name in
      ("rich_progress_bar", "model_summary", "early_stopping", "model_checkpoint", "metric_plots")),
    # ++: set whether or not conf/trainer declares the key
    *(f"++trainer.{key}" for key in
      ("enable_checkpointing=false", "enable_progress_bar=false", "enable_model_summary=false",
       "limit_val_batches=0", "num_sanity_val_steps=0")),
    "test=false",
]


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
    callbacks = cfg.callbacks or {}
    return [name for name, c in callbacks.items() if c is not None and "grad" in c._target_.lower()]


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
    callbacks = builders.build_callbacks(cfg) + [timer]
    trainer = builders.build_trainer(cfg, callbacks, builders.build_loggers(cfg))
    try:
        trainer.fit(task, datamodule=datamodule)
        # Before finishing: the hooks log into the run. Three periods, so histograms are counted fairly.
        hooks = hook_cost_per_step(task, steps=3 * cfg.logger.wandb.watch_log_freq)
    finally:
        finish_active_run(exit_code=0)
    return timer.intervals, hooks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per window")
    parser.add_argument("--windows", type=int, default=6, help="windows per variant, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least noise)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both variants")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*srun.*")  # SLURM is installed here but not used
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")

    base = [*QUIET, f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1", *args.overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"), \
            tempfile.TemporaryDirectory() as tmp:
        defaults = compose_config(base, Path(tmp))
        grad_callbacks = gradient_callbacks(defaults)
        off = ["logger.wandb.watch=null", *(f"callbacks.{name}=null" for name in grad_callbacks)]
        variants = {"no gradient logging": base + off, "default": base}
        run_window(base + ["trainer.max_steps=50"], Path(tmp) / "warm-up")  # first-use costs, not counted
        times: dict[str, list[float]] = {name: [] for name in variants}
        hook_costs: list[float] = []
        for window in range(args.windows):
            # Alternate which variant goes first, so a drift in machine load favours neither.
            for name in list(variants)[:: 1 if window % 2 == 0 else -1]:
                output_dir = Path(tmp) / f"{name.replace(' ', '_')}-{window}"
                intervals, hooks = run_window(variants[name], output_dir)
                times[name].append(statistics.fmean(intervals))
                hook_costs += [hooks] if hooks is not None and name == "default" else []

    off_name = "no gradient logging"
    ratios = [d / o for d, o in zip(times["default"], times[off_name])]
    print(f"\nstep time of the default experiment ({' '.join(args.overrides) or 'no extra overrides'}), "
          f"{args.windows} interleaved windows of {args.steps} steps per variant, "
          f"{args.threads} torch thread(s)")
    print(f"default gradient logging: W&B watch={defaults.logger.wandb.watch} every "
          f"{defaults.logger.wandb.watch_log_freq} backward passes; gradient callbacks: "
          f"{', '.join(grad_callbacks) or 'none'}")
    print(f"{'variant':<22}{'fastest ms':>11}{'median ms':>11}   windows (mean ms per step)")
    for name, means in times.items():
        print(f"{name:<22}{1e3 * min(means):>11.3f}{1e3 * statistics.median(means):>11.3f}   "
              + " ".join(f"{1e3 * m:.3f}" for m in means))
    fastest = min(times["default"]) / min(times[off_name])
    print(f"overhead, fastest windows:           {100 * (fastest - 1):+.2f}%")
    print(f"overhead, median of window pairs:    {100 * (statistics.median(ratios) - 1):+.2f}%   "
          f"(pairs: {' '.join(f'{100 * (r - 1):+.1f}%' for r in ratios)})")
    if hook_costs:
        cost = statistics.median(hook_costs)
        print(f"W&B hooks alone, called directly:    {100 * cost / min(times[off_name]):+.2f}%   "
              f"({1e6 * cost:.1f} us per step, histograms included; no timing noise)")
    print("target: <= +1%")


if __name__ == "__main__":
    main()
