"""Step overhead: chainrule-train's stack (config -> builders -> Task -> Lightning) against a hand-written
PyTorch loop on the same model, data (already on the device), optimizer, precision and clipping.

The stack runs three ways: without checkpoints, and with chainrule's checkpoint callback at its default
cadence (last.ckpt at every epoch end, which these 8-batch epochs make every 8 steps, and a step
checkpoint every 100 steps), written in the background (the default) and synchronously. Both loops clear
gradients the same way (set to None before the forward pass, as Lightning does), so the allocator treats
them alike. Interleaved windows (raw, each stack, raw, ...) of at least --window seconds after warm-up;
each ratio is stack throughput / raw throughput from the medians. Target: >= 0.99 on an H100, >= 0.97
on a 2-core CPU at the `cpu` sizes.

    python benchmarks/step_overhead.py --preset cpu      # ~4 min on 2 CPU cores
    python benchmarks/step_overhead.py --preset h100     # ResNet-18 b512 bf16 + GPT-2 small seq 1024 compiled
    python benchmarks/step_overhead.py --preset tiny     # seconds; CI keeps the script working
    python benchmarks/step_overhead.py --workload "digits MLP" --no-record   # one workload
"""

import argparse
import itertools
import time
from dataclasses import dataclass

import torch
from hydra.utils import instantiate

from benchmarks.common import (
    StepTimer,
    Window,
    append_results,
    compose_run,
    device,
    device_name,
    interleave,
    median_step_time,
    peak_flops,
    print_table,
    steps_for,
    synchronize,
)
from chainrule.config import builders
from chainrule.optim.param_groups import build_optimizer


@dataclass(frozen=True)
class Workload:
    name: str
    overrides: tuple[str, ...]
    unit: str  # what one sample is: "img" or "tok"
    # How chainrule's stack runs it: by name, the overrides of each way (checkpointing, callbacks, loggers).
    stacks: tuple[tuple[str, tuple[str, ...]], ...]
    real_data: bool = False  # the stack loads through its data module, not from the raw loop's ready batches


def workloads(preset: str) -> list[Workload]:
    gpu = preset == "h100"
    precision = "trainer.precision=bf16-mixed"
    common = ("optim=adamw", "optim.fused=true" if gpu else "optim.foreach=true", "scheduler=constant",
              precision, "trainer.gradient_clip_val=1.0")
    resnet = {"h100": (512, 32), "cpu": (32, 32), "tiny": (8, 16)}[preset]
    gpt = {"h100": dict(layers=12, heads=12, embd=768, seq=1024, vocab=50304, batch=16),
           "cpu": dict(layers=2, heads=4, embd=128, seq=128, vocab=512, batch=16),
           "tiny": dict(layers=1, heads=2, embd=32, seq=32, vocab=64, batch=4)}[preset]
    return [
        Workload("ResNet-18", common + (
            "model=torchvision", "model.name=resnet18", "data=synthetic", f"data.input_shape=[3,{resnet[1]},{resnet[1]}]",
            "data.num_classes=10", f"data.num_samples={resnet[0] * 8}", f"data.batch_size={resnet[0]}",
            "data.val_fraction=0", "data.test_fraction=0", "task.channels_last=true",
        ), "img", CHECKPOINTING),
        Workload("GPT", common + (
            "model=gpt2_small", f"model.n_layer={gpt['layers']}", f"model.n_head={gpt['heads']}",
            f"model.n_embd={gpt['embd']}", "data=tokens", f"data.seq_len={gpt['seq']}",
            f"data.vocab_size={gpt['vocab']}", f"data.num_sequences={gpt['batch'] * 8}",
            f"data.batch_size={gpt['batch']}", "data.val_fraction=0", "data.test_fraction=0",
            "task=language_model", "loss=token_cross_entropy",
            *(("task.compile=default",) if gpu else ()),
        ), "tok", CHECKPOINTING),
        # The default experiment as `chainrule-train` runs it: its data module (shuffling, batching on the
        # fly), every default callback and the default loggers (W&B offline, CSV).
        Workload("digits MLP", (), "img", (("default callbacks and loggers", ()),), real_data=True),
    ]


PIPELINE = ("trainer.limit_val_batches=0", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "test=false")
# How the stack checkpoints: the callbacks group and the checkpoint writer.
CHECKPOINTING = (
    ("no checkpoints", ("callbacks=none", "logger=csv")),
    ("checkpoints, background", ("callbacks=each/checkpoints", "logger=csv")),
    ("checkpoints, synchronous", ("callbacks=each/checkpoints", "logger=csv", "trainer.plugins.0.in_background=false")),
)


def build(workload: Workload, *overrides: str):
    cfg = compose_run(*workload.overrides, *PIPELINE, *overrides, f"trainer.accelerator={device().type}")
    torch.manual_seed(cfg.seed)
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    train = datamodule.splits.train
    per_batch = cfg.data.batch_size
    memory_format = torch.channels_last if cfg.task.channels_last and train.x.ndim == 4 else torch.contiguous_format
    batches = [
        (train.x[i:i + per_batch].to(device()).contiguous(memory_format=memory_format), train.y[i:i + per_batch].to(device()))
        for i in range(0, len(train) - per_batch + 1, per_batch)
    ]
    return cfg, task, batches


def raw_window(cfg, task, batches, warmup: int, steps: int) -> Window:
    """The loop a careful PyTorch user writes by hand."""
    model, loss_fn = task.model.to(device()).train(), task.loss
    optimizer = build_optimizer(instantiate(cfg.optim), model)
    autocast = torch.autocast(device().type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed")
    start = 0.0
    for step, (x, y) in enumerate(itertools.islice(itertools.cycle(batches), warmup + steps)):
        if step == warmup:
            synchronize()
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(x), y)
        loss.backward()
        if cfg.trainer.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val, foreach=True)
        optimizer.step()
    synchronize()
    return Window(time.perf_counter() - start, steps)


class BatchList:
    """A reusable iterable over ready batches (a bare list would be read as several dataloaders)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def pipeline_window(cfg, task, batches, warmup: int, steps: int, real_data: bool) -> Window:
    """chainrule-train's own stack: the trainer built from the same config, fed the same batches, or
    loading through the data module (`real_data`)."""
    timer = StepTimer(warmup, steps)
    cfg.trainer.max_steps = warmup + steps
    cfg.trainer.max_epochs = -1  # the steps decide: however many epochs they take
    callbacks = [*builders.build_callbacks(cfg), timer]
    trainer = builders.build_trainer(cfg, callbacks=callbacks, loggers=builders.build_loggers(cfg))
    if real_data:
        trainer.fit(task, datamodule=builders.build_datamodule(cfg))
    else:
        trainer.fit(task, train_dataloaders=BatchList(batches))
    assert timer.window is not None, "the timed window did not complete"
    return timer.window


def measure(workload: Workload, window_s: float, repeats: int, warmup: int) -> list[list[str]]:
    cfg, raw_task, batches = build(workload, *workload.stacks[0][1])
    stacks = {how: build(workload, *overrides)[:2] for how, overrides in workload.stacks}
    step_time = raw_window(cfg, raw_task, batches, warmup, 3).step_time
    steps = steps_for(window_s, step_time)
    runs = {"raw": lambda: raw_window(cfg, raw_task, batches, warmup, steps)}
    for how, (stack_cfg, task) in stacks.items():
        runs[how] = lambda stack_cfg=stack_cfg, task=task: pipeline_window(stack_cfg, task, batches, warmup, steps,
                                                                           workload.real_data)
    windows = interleave(runs, repeats)
    raw = median_step_time(windows["raw"])
    x = batches[0][0]
    per_step = x.shape[0] * (x.shape[1] if workload.unit == "tok" else 1)
    flops = getattr(raw_task.model, "flops_per_token", None)
    peak = peak_flops()
    rows = []
    for how, _ in workload.stacks:
        pipe = median_step_time(windows[how])
        rows.append([workload.name, how, str(tuple(x.shape)), f"{per_step / raw:,.0f} {workload.unit}/s",
                     f"{per_step / pipe:,.0f} {workload.unit}/s", f"{raw * 1e3:.2f}", f"{pipe * 1e3:.2f}",
                     f"{raw / pipe:.3f}",
                     f"{flops() * per_step / pipe / peak:.1%}" if flops and peak else "n/a"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "cpu", "h100"], default="cpu")
    parser.add_argument("--window", type=float, help="seconds per timed window (default: 5; tiny: 0.2)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default: 5; tiny: 1)")
    parser.add_argument("--workload", action="append", help="only this workload (repeatable), e.g. 'digits MLP'")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    tiny = args.preset == "tiny"
    window = args.window or (0.2 if tiny else 5.0)
    repeats = args.repeats or (1 if tiny else 5)
    chosen = [w for w in workloads(args.preset) if not args.workload or w.name in args.workload]
    rows = [row for w in chosen for row in measure(w, window, repeats, warmup=2 if tiny else 5)]
    table = print_table(
        f"Step overhead ({args.preset}, {repeats} interleaved repeats of >= {window:g} s)",
        ["workload", "chainrule's stack", "batch", "raw loop", "chainrule", "raw ms/step", "chainrule ms/step",
         "chainrule/raw", "MFU"],
        rows,
    )
    if not args.no_record and not tiny:
        append_results(table, f"{device_name()}")


if __name__ == "__main__":
    main()
