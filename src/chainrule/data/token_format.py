"""The on-disk format of token files (nanoGPT's, with a meta.json), and writing it: what
`chainrule-prepare tokens` writes and chainrule.data.token_file reads.

    <dir>/train.bin, val.bin, test.bin   token ids back to back, uint16 (vocabulary <= 65,536) or uint32
    <dir>/meta.json                      {"dtype", "vocab_size", "tokenizer", "eot", "splits": counts}
"""

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chainrule.core.errors import DataNotFoundError
from chainrule.data.tokenizers import Tokenizer

META = "meta.json"
DTYPES = ("uint16", "uint32")


def token_file(data_dir: Path, split: str) -> Path:
    return data_dir / f"{split}.bin"


def read_meta(data_dir: Path) -> dict[str, Any]:
    """The token files' description (dtype, vocab_size, tokenizer), checked."""
    path = data_dir / META
    if not path.is_file():
        raise DataNotFoundError(f"no token files in {data_dir} ({META} is missing): write them with "
                                f"`chainrule-prepare tokens <text files or folders> --output {data_dir}`, or "
                                f"point data.data_dir at a folder holding train.bin, val.bin and {META}")
    meta = json.loads(path.read_text())
    if meta.get("dtype") not in DTYPES or not isinstance(meta.get("vocab_size"), int):
        raise DataNotFoundError(f"{path} must give dtype ({' or '.join(DTYPES)}) and vocab_size (an "
                                f"integer); it has {meta}")
    return meta


def assign_splits(sizes: Sequence[int], val_fraction: float, test_fraction: float,
                  seed: int) -> list[str]:
    """The split of each document: in an order shuffled with `seed`, a document goes to val while val holds
    less than `val_fraction` of all bytes and the document still fits in that share, else to test likewise,
    else to train (whole documents: no text is in two splits)."""
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    total = sum(sizes)
    budget = {"val": round(val_fraction * total), "test": round(test_fraction * total)}
    used = dict.fromkeys(budget, 0)
    splits = ["train"] * len(sizes)
    for i in order:
        split = next((name for name in budget if used[name] + sizes[i] <= budget[name]), None)
        if split is not None:
            splits[i] = split
            used[split] += sizes[i]
    return splits


def _carve(output: Path, dtype: str, split: str, fraction: float, total: int) -> int:
    """Move the last `fraction` of all `total` tokens from train.bin to `split`.bin (for text too few
    documents to split whole, such as one big file); returns the tokens moved."""
    train = token_file(output, "train")
    count = np.dtype(dtype).itemsize
    tokens = train.stat().st_size // count
    moved = min(round(fraction * total), max(0, tokens - 1))
    tail = np.fromfile(train, dtype=dtype, offset=(tokens - moved) * count)
    tail.tofile(token_file(output, split))
    with open(train, "r+b") as f:
        f.truncate((tokens - moved) * count)
    return moved


def write_token_files(documents: Sequence[Path], tokenizer: Tokenizer, output: Path, val_fraction: float,
                      test_fraction: float, seed: int) -> dict[str, Any]:
    """Tokenize `documents` (each followed by the end-of-text token) into train.bin, val.bin, test.bin and
    meta.json under `output`, in a seeded document order; returns what meta.json records. A split that
    no whole document fits in takes its fraction from the end of the training tokens instead."""
    dtype = "uint16" if tokenizer.vocab_size <= 2**16 else "uint32"
    splits = assign_splits([d.stat().st_size for d in documents], val_fraction, test_fraction, seed)
    order = list(range(len(documents)))
    random.Random(seed + 1).shuffle(order)
    output.mkdir(parents=True, exist_ok=True)
    (output / META).unlink(missing_ok=True)  # written last: its presence says the files are complete
    counts = {split: {"documents": 0, "tokens": 0} for split in ("train", "val", "test")}
    files = {split: open(token_file(output, split), "wb") for split in counts}
    try:
        for i in order:
            ids = tokenizer.encode(documents[i].read_bytes())
            if tokenizer.eot is not None:
                ids = np.append(ids, tokenizer.eot)
            files[splits[i]].write(ids.astype(dtype).tobytes())
            counts[splits[i]]["documents"] += 1
            counts[splits[i]]["tokens"] += len(ids)
    finally:
        for f in files.values():
            f.close()
    total = sum(c["tokens"] for c in counts.values())
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and counts[split]["tokens"] == 0:
            moved = _carve(output, dtype, split, fraction, total)
            counts[split]["tokens"] += moved
            counts["train"]["tokens"] -= moved
    meta = {"dtype": dtype, "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.name,
            "eot": tokenizer.eot, "splits": counts}
    (output / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
