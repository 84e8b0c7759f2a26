"""Step-time cost of the default gradient logging (W&B gradient histograms from
callbacks.gradient_histograms, plus any other gradient-statistics callback in the default callbacks),
and of W&B's own hooks (wandb.watch) for comparison, in one process with interleaved windows.

    python -m benchmarks.wandb_overhead [--steps 1000] [--windows 4] [override ...]   # ~5 min on 2 cores

Each window trains the default experiment for `--steps` optimizer steps, in turn with:
  no gradient logging  histogram callback, other gradient callbacks and wandb.watch all off
  default              the default config
  wandb.watch          histogram callback off, logger.wandb.watch=gradients (every watch_log_freq passes)
A step is the time between the ends of two consecutive training batches of one epoch, so data loading,
hooks and logging all count; epoch boundaries (validation is off, but data loaders restart) are left
out. W&B runs offline into a temporary directory. Extra arguments are Hydra overrides for all variants
(e.g. model.width=1024 model.depth=8).

Two clocks: wall time, and the CPU time of this process (all its threads). On a machine shared with
other work, wall time swings by tens of percent between windows and CPU time less; W&B's service
process works asynchronously and is in neither. Each cost is also measured in isolation, which load
cannot blur: the histogram callback's work per logging step, and wandb.watch's hooks from short blocks
of backward passes of the same model on the same batch with and without the hooks, alternating.
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
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, open_dict

from benchmarks.common import print_table
from chainrule.callbacks.gradient_histograms import GradientHistograms
from chainrule.config import builders
from chainrule.config.groups import config_dir
from chainrule.loggers.wandb import finish_active_run

# Callbacks that only print or act between epochs, kept out of all variants.
QUIET = [
    *(f"callbacks.{name}=null" for name in
      ("progress", "early_stopping", "checkpoints", "metric_plots")),
    # ++: set whether or not conf/trainer declares the key
    *(f"++trainer.{key}" for key in
      ("enable_checkpointing=false", "enable_progress_bar=false", "enable_model_summary=false",
       "limit_val_batches=0", "num_sanity_val_steps=0")),
    "test=false",
]
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
OFF = "no gradient logging"


class StepTimer(L.Callback):
    """Per clock, the time between consecutive training batch ends within an epoch, in seconds."""

    def __init__(self) -> None:
        self.intervals: dict[str, list[float]] = {clock: [] for clock in CLOCKS}
        self._last: dict[str, float] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = {clock: read() for clock, read in CLOCKS.items()}
        if self._last is not None:
            for clock in CLOCKS:
                self.intervals[clock].append(now[clock] - self._last[clock])
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


def watch_hook_cost(task: L.LightningModule, batch: Any, watch_log_freq: int,
                    block: int = 50) -> float | None:
    """CPU seconds that wandb.watch's hooks add to one backward pass of the task's model on `batch`,
    histograms (every `watch_log_freq` passes) included: the median difference between blocks of passes
    with the hooks attached and without, alternating. None when no parameter carries a hook."""
    hooked = {p: p._backward_hooks for p in task.parameters() if p._backward_hooks}
    if not hooked:
        return None
    x, y = batch

    def passes() -> float:
        start = time.process_time()
        for _ in range(block):
            task.zero_grad(set_to_none=True)
            task.loss(task.model(x), y).backward()
        return (time.process_time() - start) / block

    with_hooks, without = [], []
    for _ in range(3 * watch_log_freq // block):  # three histogram periods
        with_hooks.append(passes())
        for param in hooked:
            param._backward_hooks = None  # detaches W&B's hooks from autograd...
        without.append(passes())
        for param, hooks in hooked.items():
            param._backward_hooks = hooks  # ...and this attaches them again
    return statistics.median(a - b for a, b in zip(with_hooks, without))


def histogram_callback_cost(trainer: L.Trainer, task: L.LightningModule, repeats: int = 5) -> float | None:
    """CPU seconds per optimizer step of the histogram callback: its work on a logging step (histograms
    of the last gradients, logged to W&B) divided by its interval. None when it is off."""
    callback = next((c for c in trainer.callbacks if isinstance(c, GradientHistograms)), None)
    if callback is None:
        return None
    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    start = time.process_time()
    for _ in range(repeats):
        metrics = callback.histograms(task)
        for logger in loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
    return (time.process_time() - start) / repeats / callback.every_n_steps


def run_window(overrides: list[str], output_dir: Path) -> tuple[dict[str, float], float | None]:
    """Mean step time per clock over one training window, and the CPU cost per step of its gradient
    logging measured in isolation (None when there is none to measure)."""
    cfg = compose_config(overrides, output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    timer = StepTimer()
    callbacks = builders.build_callbacks(cfg) + [timer]
    trainer = builders.build_trainer(cfg, callbacks, builders.build_loggers(cfg))
    try:
        trainer.fit(task, datamodule=datamodule)
        # Before finishing: both log into the run.
        batch = next(iter(datamodule.train_dataloader()))
        isolated = watch_hook_cost(task, batch, cfg.logger.wandb.watch_log_freq)
        isolated = histogram_callback_cost(trainer, task) if isolated is None else isolated
    finally:
        finish_active_run(exit_code=0)
    return {clock: statistics.fmean(values) for clock, values in timer.intervals.items()}, isolated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per window")
    parser.add_argument("--windows", type=int, default=4, help="windows per variant, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least noise)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for all variants")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*srun.*")  # SLURM is installed here but not used
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")

    base = [*QUIET, f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1", *args.overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"), \
            tempfile.TemporaryDirectory() as tmp:
        defaults = compose_config(base, Path(tmp))
        others = [name for name in gradient_callbacks(defaults) if name != "gradient_histograms"]
        histograms = "callbacks.gradient_histograms=null"
        variants = {
            OFF: [*base, histograms, "logger.wandb.watch=null", *(f"callbacks.{n}=null" for n in others)],
            "default": base,
            "wandb.watch": [*base, histograms, "logger.wandb.watch=gradients"],
        }
        run_window(base + ["trainer.max_steps=50"], Path(tmp) / "warm-up")  # first-use costs, not counted
        means: dict[str, dict[str, list[float]]] = {name: {c: [] for c in CLOCKS} for name in variants}
        isolated: dict[str, list[float]] = {name: [] for name in variants}
        for window in range(args.windows):
            # Rotate which variant goes first, so a drift in machine load favours none.
            names = list(variants)[window % len(variants):] + list(variants)[:window % len(variants)]
            for name in names:
                step, cost = run_window(variants[name], Path(tmp) / f"{name.replace(' ', '_')}-{window}")
                for clock in CLOCKS:
                    means[name][clock].append(step[clock])
                isolated[name] += [cost] if cost is not None else []

    hist = defaults.callbacks.get("gradient_histograms")
    print(f"\ndefault experiment ({' '.join(args.overrides) or 'no extra overrides'}) on "
          f"{args.threads} torch thread(s), {args.windows} interleaved windows of {args.steps} steps per "
          f"variant; default: W&B histograms every {hist.every_n_steps if hist else '-'} steps"
          f"{' + ' + ', '.join(others) if others else ''}; wandb.watch every "
          f"{defaults.logger.wandb.watch_log_freq} backward passes\n")
    rows = []
    for clock in CLOCKS:
        for name in variants:
            ms = [1e3 * m for m in means[name][clock]]
            rows.append([clock, name, f"{min(ms):.3f}", f"{statistics.median(ms):.3f}",
                         " ".join(f"{m:.3f}" for m in ms)])
    print_table("step time (ms, mean per window)", ["clock", "variant", "fastest", "median", "windows"], rows)
    baseline = statistics.median(means[OFF]["cpu"])
    rows = []
    for name in variants:
        if name == OFF:
            continue
        wall, cpu = (statistics.median(means[name][c]) / statistics.median(means[OFF][c]) - 1 for c in CLOCKS)
        alone = statistics.median(isolated[name]) if isolated[name] else None
        rows.append([name, f"{100 * wall:+.2f}%", f"{100 * cpu:+.2f}%",
                     f"{100 * alone / baseline:+.3f}%" if alone is not None else "-",
                     f"{1e6 * alone:.1f}" if alone is not None else "-"])
    print()
    header = ["variant", "wall, medians", "cpu, medians", "W&B part alone (cpu)", "W&B part, us/step"]
    print_table(f"overhead against '{OFF}' (target for the default: <= +1%)", header, rows)


if __name__ == "__main__":
    main()
