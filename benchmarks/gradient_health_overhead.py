"""Step-time overhead of the gradient health callback at its default settings.

One training run per model, in which the callback (settings from conf/callbacks/each/gradient_health.yaml) is
switched on and off in alternating blocks of `every_n_steps` optimizer steps: each "on" block costs what
the callback costs in normal use (its hooks on every step, one logging step), each "off" block is the
baseline, both measured in the same run, interleaved. Prints a table:

- baseline: median step time in the "off" blocks;
- logging step: extra time of the one logging step of an "on" block over the median of its other steps;
- other steps: the callback's hooks on a step that does not log (timed in a loop after training);
- overhead: (other steps + logging step / every_n_steps) / baseline, the callback's cost per step;
- end to end: median over block pairs of mean("on") / mean("off") - 1, and half the interquartile range
  of that ratio: a direct but noisy figure, since other processes' load bursts land in either block.

Run: python benchmarks/gradient_health_overhead.py [--device cpu|cuda] [--pairs N]
"""

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from chainrule.callbacks.gradient_health import GradientHealth
from chainrule.models.cnn import SmallCNN
from chainrule.models.mlp import MLP
from chainrule.optim.schedules import constant
from chainrule.training.task import Task

CONF = Path(__file__).resolve().parents[1] / "conf" / "callbacks" / "each" / "gradient_health.yaml"


@dataclass(frozen=True)
class Case:
    name: str
    model: partial
    input_shape: tuple[int, ...]
    batch: int


CPU_CASES = [
    Case("mlp 64-256-256-10 (digits default)", partial(MLP, activation="relu", dropout=0.0, norm="none", residual=False, depth=2, width=256), (1, 8, 8), 64),
    Case("mlp 784-512x4-10", partial(MLP, activation="relu", dropout=0.0, norm="none", residual=False, depth=4, width=512), (1, 28, 28), 128),
    Case("small cnn 16/32ch, 16x16", partial(SmallCNN, dropout=0.0, channels=(16, 32), hidden=64), (1, 16, 16), 32),
]
GPU_CASES = [
    Case("mlp 784-1024x6-10", partial(MLP, activation="relu", dropout=0.0, norm="none", residual=False, depth=6, width=1024), (1, 28, 28), 1024),
    Case("mlp 3072-4096x8-10 (130M params)", partial(MLP, activation="relu", dropout=0.0, norm="none", residual=False, depth=8, width=4096), (3, 32, 32), 1024),
    Case("small cnn 64/128/256ch, 32x32", partial(SmallCNN, dropout=0.0, channels=(64, 128, 256), hidden=512), (3, 32, 32),
         512),
]


class StepClock(L.Callback):
    """Timestamps every optimizer step's start (CUDA events on a GPU: no synchronization per step)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.marks: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def durations_ms(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


class Alternating(L.Callback):
    """Passes the per-step hooks to `callback` in even blocks of `block` steps only ("on"), never in odd
    blocks ("off"); setup hooks always."""

    def __init__(self, callback: L.Callback, block: int):
        self.callback, self.block = callback, block

    def on(self, trainer: L.Trainer) -> bool:
        return (trainer.global_step // self.block) % 2 == 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.callback.on_fit_start(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        if self.on(trainer):
            self.callback.on_train_batch_start(trainer, pl_module, *args)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.on(trainer):
            self.callback.on_before_optimizer_step(trainer, pl_module, optimizer)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        # Lightning has already counted the step: the block is the one the step started in.
        if ((trainer.global_step - 1) // self.block) % 2 == 0:
            self.callback.on_train_batch_end(trainer, pl_module, *args)


def measure(case: Case, pairs: int, warmup_pairs: int, device: str, log_dir: str) -> dict[str, float]:
    torch.manual_seed(0)
    n = case.batch * 32
    data = TensorDataset(torch.randn(n, *case.input_shape), torch.randint(0, 10, (n,)))
    loader = DataLoader(data, batch_size=case.batch, shuffle=True, drop_last=True)
    task = Task(
        model=case.model(input_shape=case.input_shape, num_outputs=10),
        loss=nn.CrossEntropyLoss(),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=constant,
        metrics={},
        target="label",
        init="default",
        l1_weight=0.0,
        compile=None,
        channels_last=False,
        freeze=[],
        lr_multipliers=None,
    )
    settings = yaml.safe_load(CONF.read_text())["gradient_health"]
    settings.pop("_target_")
    health = GradientHealth(**settings)
    block = health.every_n_steps
    clock = StepClock(cuda=device == "cuda")
    trainer = L.Trainer(
        accelerator=device, devices=1, max_steps=2 * block * (pairs + warmup_pairs) + 1, max_epochs=-1,
        logger=CSVLogger(log_dir), callbacks=[clock, Alternating(health, block)], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, log_every_n_steps=50,
    )
    trainer.fit(task, train_dataloaders=loader)
    steps = clock.durations_ms()
    ratios, baselines, extras = [], [], []
    for pair in range(warmup_pairs, warmup_pairs + pairs):
        on = steps[2 * pair * block:(2 * pair + 1) * block]  # starts with the logging step
        off = steps[(2 * pair + 1) * block:(2 * pair + 2) * block]
        ratios.append(statistics.fmean(on) / statistics.fmean(off) - 1)
        baselines.append(statistics.median(off))
        extras.append(on[0] - statistics.median(on[1:]))
    baseline, extra = statistics.median(baselines), statistics.median(extras)
    hooks = hook_cost_ms(health, trainer, task)
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "baseline": baseline, "extra": extra, "hooks_us": hooks * 1e3, "interval": block,
        "overhead": (hooks + extra / block) / baseline * 100,
        "end_to_end": statistics.median(ratios) * 100, "spread": (quartiles[2] - quartiles[0]) / 2 * 100,
    }


def hook_cost_ms(health: GradientHealth, trainer: L.Trainer, task: L.LightningModule,
                 calls: int = 20000) -> float:
    """Time of the callback's three per-step hooks on a step that does not log."""
    assert trainer.global_step % health.every_n_steps, "needs a non-logging step"
    start = time.perf_counter()
    for _ in range(calls):
        health.on_train_batch_start(trainer, task, None, 0)
        health.on_before_optimizer_step(trainer, task, None)
        health.on_train_batch_end(trainer, task, None, None, 0)
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"])
    parser.add_argument("--pairs", type=int, default=10, help="on/off block pairs timed per model")
    parser.add_argument("--warmup-pairs", type=int, default=1, help="block pairs left out of the timing")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    cases = GPU_CASES if args.device == "cuda" else CPU_CASES
    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else f"CPU, {torch.get_num_threads()} threads")
    print(f"gradient health overhead: {device_name}, torch {torch.__version__}, lightning {L.__version__}, "
          f"{args.pairs} on/off block pairs per model, defaults from {CONF.name}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        for case in cases:
            r = measure(case, args.pairs, args.warmup_pairs, args.device, log_dir)
            rows.append(f"{case.name:36} {case.batch:>5} {r['baseline']:>11.3f} {r['extra']:>15.3f} "
                        f"{r['hooks_us']:>14.1f} {r['overhead']:>8.2f}% {r['end_to_end']:>+8.2f}% "
                        f"±{r['spread']:.2f}%")
            print(rows[-1], file=sys.stderr, flush=True)  # progress while the rest runs
    print(f"{'model':36} {'batch':>5} {'baseline ms':>11} {'logging step ms':>15} {'other steps µs':>14} "
          f"{'overhead':>9} {'end to end':>17}")
    print("\n".join(rows))
    print(f"(every_n_steps={r['interval']}; overhead = (other steps + logging step / every_n_steps) / "
          f"baseline, target <= 1%; end to end = on/off blocks of the same run, ± half its "
          f"interquartile range)")

if __name__ == "__main__":
    main()
