"""Tiny data in the on-disk formats of the file-based data modules, written by the tests themselves:
image files in class folders (PNG and JPEG), token files (chainrule-prepare's format) and LitData shards.
Each is learnable, so a few steps of training lower the loss."""

import functools
from pathlib import Path

import numpy as np
import torch
from torchvision.io import write_jpeg, write_png

from chainrule.data import streaming
from chainrule.data.token_format import write_token_files
from chainrule.data.tokenizers import make_tokenizer

IMAGE_CLASSES = 3


def write_images(root: Path, per_class: int = 16, size: tuple[int, int] = (20, 24), seed: int = 0,
                 splits: tuple[str, ...] = ()) -> Path:
    """`root/<class>/<n>.png|jpg`, or `root/<split>/<class>/...` for each of `splits`; class c's images
    are brighter in channel c (learnable), every other one a JPEG."""
    rng = np.random.default_rng(seed)
    for folder in [root / split for split in splits] or [root]:
        for c in range(IMAGE_CLASSES):
            (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 90, (3, *size))
                pixels[c] += 150
                image = torch.from_numpy(pixels.astype(np.uint8))
                if i % 2:
                    write_jpeg(image, str(folder / f"class{c}" / f"{i}.jpg"), quality=95)
                else:
                    write_png(image, str(folder / f"class{c}" / f"{i}.png"))
    return root


def write_text(folder: Path, files: int = 12, lines: int = 60, seed: int = 0) -> list[Path]:
    """Text files of a few repeated, slightly varied lines: a byte-level model learns them fast."""
    rng = np.random.default_rng(seed)
    words = ["def", "return", "self", "import", "class", "value", "for", "in", "range", "print"]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(files):
        text = "\n".join(" ".join(words[(i + j + int(rng.integers(0, 2))) % len(words)] for j in range(6))
                         for i in range(lines))
        path = folder / f"doc{n}.txt"
        path.write_text(text + "\n")
        paths.append(path)
    return paths


def write_tokens(folder: Path, text_dir: Path | None = None) -> Path:
    """Token files of write_text's documents (byte tokenizer) in `folder`."""
    documents = write_text(text_dir or folder.parent / f"{folder.name}-text")
    write_token_files(documents, make_tokenizer("bytes"), folder, val_fraction=0.15, test_fraction=0.15,
                      seed=0)
    return folder


def _item(index: int, features: int, classes: int, seed: int) -> dict:
    """Item `index`: x = [index, random features], y = class of a fixed linear teacher."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(features, classes, generator=generator)
    features_x = torch.randn(features, generator=torch.Generator().manual_seed(seed * 100_003 + index))
    x = torch.cat([torch.tensor([float(index)]), features_x])
    return {"x": x, "y": int((features_x @ teacher).argmax())}


SHARD_FEATURES = 7
SHARD_CLASSES = 3


def write_shards(root: Path, sizes: dict[str, int] | None = None, items_per_chunk: int = 16) -> Path:
    """LitData shards `root/train`, `root/val`, `root/test` of _item's; x[0] is the item's id, so a test
    can see which items a run trained on."""
    sizes = sizes or {"train": 128, "val": 24, "test": 24}
    starts = [sum(list(sizes.values())[:i]) for i in range(len(sizes))]
    inputs = {split: list(range(start, start + n)) for (split, n), start in zip(sizes.items(), starts)}
    fn = functools.partial(_item, features=SHARD_FEATURES, classes=SHARD_CLASSES, seed=0)
    streaming.write_shards(fn, inputs, str(root), chunk_bytes=None, chunk_size=items_per_chunk, num_workers=1,
                 start_method="fork")
    return root


def populate_files(data_dir: Path) -> None:
    """Every file-based option of conf/data/ finds tiny data under `data_dir` at its default path."""
    write_images(data_dir / "images")
    write_tokens(data_dir / "tokens")
    write_shards(data_dir / "shards")
