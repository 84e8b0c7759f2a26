"""Data path: can each loader feed its model? Samples per second that each data module's training loader
delivers (in-memory tensors through a DataLoader, an image folder decoded by workers, a token file,
LitData shards) against the samples per second its model consumes in training steps on the same device,
measured in the same run. ratio = loader / model: at >= 1 the loader keeps up; below 1 training waits for
data.

The last row, in-memory data on the device (`data.on_device=true`, chainrule.data.device_batches), times
training steps in both columns: a small CNN fed batch after batch by the device-resident loader
("loader"), and the same steps on one batch already on the device ("model"), in interleaved windows.
Its ratio is the share of the synthetic-batch speed that real batches keep (the target: >= 0.95).

Data is generated into a temporary folder (JPEG images, a token file, shards of the same images), or
read from --data-dir when it already holds them (images/, tokens/, shards/).

    python -m benchmarks.data_path                      # cpu preset, ~1 min on 2 cores
    python -m benchmarks.data_path --preset gpu         # one GPU: 224 px ResNet-50, GPT-2 small
    python -m benchmarks.data_path --preset gpu --dry-run   # the gpu preset's code path, tiny, on the CPU
    python -m benchmarks.data_path --preset tiny        # seconds; CI keeps the script working
"""

import argparse
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.common import (
    Window,
    append_results,
    compose_run,
    device,
    device_name,
    interleave,
    median_step_time,
    print_table,
    synchronize,
)
from chainrule.config import builders
from chainrule.data.image_folder import discover
from chainrule.data.streaming import write_image_shards
from chainrule.data.token_format import write_token_files
from chainrule.data.tokenizers import make_tokenizer
from chainrule.optim.param_groups import build_optimizer


@dataclass(frozen=True)
class Preset:
    images: int  # image files written (JPEG), also the shards' items
    image_px: int  # side of the written images
    image_size: int  # the model's input side after the transforms
    image_model: tuple[str, ...]
    image_batch: int
    tokens: int  # bytes of text in the token file
    seq_len: int
    gpt: tuple[str, ...]
    token_batch: int
    workers: int
    batches: int  # timed batches per loader, after one warm-up batch
    steps: int  # timed training steps per model, after two warm-up steps
    # In-memory data on the device: a small CNN on CIFAR-sized images, in interleaved windows
    memory_samples: int
    memory_px: int
    memory_model: tuple[str, ...]
    memory_batch: int
    memory_steps: int  # training steps per window
    memory_windows: int  # windows of each kind


SMALL_GPT = ("model.n_layer=2", "model.n_head=4", "model.n_embd=128")
TINY_CNN = ("model=cnn", "model.channels=[8,16]", "model.hidden=32")
PRESETS = {
    "tiny": Preset(48, 40, 16, TINY_CNN, 8, 20_000, 32,
                   ("model.n_layer=1", "model.n_head=2", "model.n_embd=32"), 8, 2, 3, 2,
                   64, 16, TINY_CNN, 8, 3, 1),
    "cpu": Preset(512, 160, 64, ("model=cnn",), 64, 2_000_000, 128, SMALL_GPT, 32, 2, 12, 8,
                  4096, 32, ("model=cnn",), 128, 20, 3),
    # 50,000 images of 32 px: CIFAR-10's training set, 600 MB on the device.
    "gpu": Preset(8192, 320, 224, ("model=torchvision", "model.name=resnet50"), 256, 50_000_000, 1024,
                  ("model.n_layer=12", "model.n_head=12", "model.n_embd=768"), 16, 8, 40, 20,
                  50_000, 32, ("model=cnn",), 512, 200, 5),
}


def write_data(root: Path, preset: Preset) -> None:
    """JPEG images of 4 classes, LitData shards of them, and a token file of random words."""
    from torchvision.io import write_jpeg

    rng = np.random.default_rng(0)
    if not (root / "images").is_dir():
        for i in range(preset.images):
            folder = root / "images" / f"class{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (3, preset.image_px, preset.image_px), dtype=np.uint8)
            write_jpeg(torch.from_numpy(pixels), str(folder / f"{i}.jpg"), quality=90)
    if not (root / "shards").is_dir():
        _, splits = discover(root / "images", 0.1, 0.0, seed=0)
        write_image_shards(splits, str(root / "shards"), preset.image_size, 3, "64MB",
                           num_workers=preset.workers, start_method="fork")
    if not (root / "tokens").is_dir():
        words = np.array(["def", "return", "self", "import", "class", "value", "for", "in", "(", ")", "\n"])
        text = root / "text.txt"
        text.write_text(" ".join(rng.choice(words, preset.tokens // 4)))
        write_token_files([text], make_tokenizer("bytes"), root / "tokens", 0.05, 0.0, seed=0)


def loaders(root: Path, preset: Preset) -> dict[str, tuple[str, ...]]:
    size, batch = f"data.image_size={preset.image_size}", f"data.batch_size={preset.image_batch}"
    image = (size, batch, *preset.image_model)
    return {
        "in-memory, DataLoader (synthetic tensors)": (
            "data=synthetic", "data.on_device=false",
            f"data.input_shape=[3,{preset.image_size},{preset.image_size}]",
            f"data.num_samples={min(preset.images, 2048)}", "data.num_classes=4", batch, *preset.image_model),
        "image folder (JPEG)": ("data=image_folder", f"data.data_dir={root}/images", *image,
                                f"data.num_workers={preset.workers}"),
        "token file": ("experiment=stdlib_gpt", f"data.data_dir={root}/tokens",
                       f"data.seq_len={preset.seq_len}", f"data.batch_size={preset.token_batch}",
                       *preset.gpt),
        "streaming (LitData shards)": ("data=streaming", f"data.input_dir={root}/shards",
                                       "data.num_classes=4", batch, *preset.image_model,
                                       f"data.num_workers={preset.workers}"),
    }


def loader_rate(datamodule, batches: int) -> tuple[float, int]:
    """Samples per second over `batches` batches after the first (worker start-up excluded)."""
    loader = datamodule.train_dataloader()

    def passes():  # epoch after epoch, each loaded anew (itertools.cycle would replay stored batches)
        while True:
            yield from loader

    iterator = passes()
    first = next(iterator)
    start, samples = time.perf_counter(), 0
    for x, _ in itertools.islice(iterator, batches):
        samples += len(x)
    return samples / (time.perf_counter() - start), len(first[0])


def model_rate(cfg, datamodule, steps: int) -> float:
    """Samples per second of training steps (forward, backward, optimizer) on one batch on the device, after
    two steps of warm-up."""
    key = (OmegaConf.to_yaml(cfg.model), datamodule.input_shape, cfg.data.batch_size)
    if key not in MODEL_RATES:  # the image loaders feed the same model: measured once
        MODEL_RATES[key] = _model_rate(cfg, datamodule, steps)
    return MODEL_RATES[key]


MODEL_RATES: dict[tuple, float] = {}


def _model_rate(cfg, datamodule, steps: int) -> float:
    task = builders.build_task(cfg, datamodule)
    model = task.model.to(device()).train()
    optimizer = build_optimizer(instantiate(cfg.optim), model)
    batch = tuple(t.to(device()) for t in next(iter(datamodule.train_dataloader())))
    training_window(task, model, optimizer, itertools.repeat(batch), 2)  # warm-up
    window = training_window(task, model, optimizer, itertools.repeat(batch), steps)
    return len(batch[0]) / window.step_time


def training_window(task, model, optimizer, batches, steps: int) -> Window:
    """`steps` training steps (forward, backward, optimizer) on the next `steps` batches of `batches`."""
    autocast = torch.autocast(device().type, dtype=torch.bfloat16, enabled=device().type == "cuda")
    synchronize()
    start = time.perf_counter()
    for _, (x, y) in zip(range(steps), batches):
        with autocast:
            loss = task.loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize()
    return Window(time.perf_counter() - start, steps)


def on_device(preset: Preset) -> list[str]:
    """Training steps fed by the device-resident loader against the same steps on one batch already on the
    device, in interleaved windows (after two steps of each)."""
    px = preset.memory_px
    cfg = compose_run("data=synthetic", "data.on_device=true", f"data.input_shape=[3,{px},{px}]",
                      f"data.num_samples={preset.memory_samples}", "data.num_classes=10",
                      f"data.batch_size={preset.memory_batch}", *preset.memory_model,
                      f"trainer.accelerator={device().type}")
    torch.manual_seed(cfg.seed)
    datamodule = builders.build_datamodule(cfg)
    datamodule.setup("fit")
    # A trainer attached as in a fit: the loader puts the split on its device.
    datamodule.trainer = L.Trainer(accelerator=device().type, devices=1, logger=False,
                                   enable_progress_bar=False, enable_checkpointing=False,
                                   enable_model_summary=False)
    loader = datamodule.train_dataloader()

    def passes():  # epoch after epoch, each reshuffled as Lightning's fit loop does
        for epoch in itertools.count():
            loader.sampler.set_epoch(epoch)
            yield from loader

    fed = passes()
    one_batch = next(fed)
    assert one_batch[0].device.type == device().type
    task = builders.build_task(cfg, datamodule)
    model = task.model.to(device()).train()
    optimizer = build_optimizer(instantiate(cfg.optim), model)

    def window(batches, steps: int) -> Window:
        return training_window(task, model, optimizer, batches, steps)

    window(fed, 2)  # warm-up: kernels chosen, the allocator filled
    window(itertools.repeat(one_batch), 2)
    windows = interleave({"loader": lambda: window(fed, preset.memory_steps),
                          "one batch": lambda: window(itertools.repeat(one_batch), preset.memory_steps)},
                         preset.memory_windows)
    rates = {name: len(one_batch[0]) / median_step_time(w) for name, w in windows.items()}
    return ["in-memory on the device: train steps fed by it vs on one batch", "0", str(len(one_batch[0])),
            f"{rates['loader']:,.0f} img/s", f"{rates['one batch']:,.0f} img/s",
            f"{rates['loader'] / rates['one batch']:.2f}"]


def measure(name: str, overrides: tuple[str, ...], preset: Preset) -> list[str]:
    cfg = compose_run(*overrides, f"trainer.accelerator={device().type}")
    torch.manual_seed(cfg.seed)
    datamodule = builders.build_datamodule(cfg)
    datamodule.setup("fit")
    feed, batch = loader_rate(datamodule, preset.batches)
    consume = model_rate(cfg, datamodule, preset.steps)
    unit = "seq" if "token" in name else "img"
    return [name, str(cfg.data.num_workers), str(batch), f"{feed:,.0f} {unit}/s", f"{consume:,.0f} {unit}/s",
            f"{feed / consume:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="the preset's models at tiny sizes on the CPU")
    parser.add_argument("--data-dir", type=Path, help="reuse (or keep) the generated data here")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    if args.dry_run:
        tiny = PRESETS["tiny"]
        preset = Preset(tiny.images, tiny.image_px, tiny.image_size, preset.image_model, tiny.image_batch,
                        tiny.tokens, tiny.seq_len, (*preset.gpt, "model.n_layer=1"), tiny.token_batch,
                        tiny.workers, tiny.batches, steps=1, memory_samples=tiny.memory_samples,
                        memory_px=tiny.memory_px, memory_model=preset.memory_model,
                        memory_batch=tiny.memory_batch, memory_steps=tiny.memory_steps,
                        memory_windows=tiny.memory_windows)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.data_dir or Path(scratch)
        write_data(root, preset)
        rows = [measure(name, overrides, preset) for name, overrides in loaders(root, preset).items()]
    rows.append(on_device(preset))
    title = f"Data path ({args.preset}{', dry run' if args.dry_run else ''}): loader vs model samples/s"
    header = ["loader", "workers", "batch", "loader", "model (train step)", "loader/model"]
    table = print_table(title, header, rows)
    if not args.no_record and args.preset != "tiny" and not args.dry_run:
        append_results(table, f"{device_name()}")


if __name__ == "__main__":
    main()
