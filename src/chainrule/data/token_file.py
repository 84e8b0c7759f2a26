"""GPT pretraining data from flat binary token files (nanoGPT's format), memory-mapped: any size on disk.

    <data_dir>/train.bin, val.bin, test.bin   token ids, back to back, in the dtype meta.json names
    <data_dir>/meta.json                      {"dtype": "uint16" | "uint32", "vocab_size": ..., ...}

`chainrule-prepare tokens` writes them from text files. A training sample is a window of `seq_len + 1`
tokens at a random offset (inputs, and the same tokens shifted by one as targets). Sample i of epoch e
starts at an offset drawn from the seed of (seed, e, i) (chainrule.data.draws), and the samples of each
optimizer step are the global batch's (chainrule.data.sampling): every rank agrees on the windows of a
step whatever the number of ranks and workers, and a resumed run continues with the same windows.
Validation and test take fixed, non-overlapping windows spread evenly over their files.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from chainrule.core.errors import ConfigError, DataNotFoundError
from chainrule.data.draws import split_key
from chainrule.data.indexed import IndexedDataModule
from chainrule.data.token_format import read_meta, token_file


class TokenWindows(Dataset):
    """Windows of `seq_len + 1` tokens of one file as (inputs, targets) int64 tensors of `seq_len`.

    `num_windows` samples. Keyed by (index, draw seed): the window starts at seed mod (tokens - seq_len);
    keyed by an index alone: at index x `stride` (>= seq_len: windows spread over the file, none
    overlapping). The file is mapped lazily in each process that reads it (a worker gets the path, not
    the mapping)."""

    def __init__(self, path: Path, dtype: str, seq_len: int, num_windows: int, stride: int):
        self.path, self.dtype, self.seq_len, self.num_windows = path, dtype, seq_len, num_windows
        self.stride = stride
        self._tokens: np.ndarray | None = None

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._tokens

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None}

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = split_key(key)
        start = index * self.stride if seed is None else seed % (len(self.tokens) - self.seq_len)
        window = torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))
        return window[:-1], window[1:]


class TokenFileDataModule(IndexedDataModule):
    """Next-token prediction on token files (see the module's docstring). An epoch is `samples_per_epoch`
    random windows (null: as many as the training file holds side by side); validation and test use at
    most `eval_windows` windows each (null: all)."""

    seeded_samples = True

    def __init__(self, data_dir: str, seq_len: int, samples_per_epoch: int | None, eval_windows: int | None,
                 **kwargs):
        super().__init__(**kwargs)
        for key, value in (("seq_len", seq_len), ("samples_per_epoch", samples_per_epoch),
                           ("eval_windows", eval_windows)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
        self.data_dir = Path(data_dir)
        self.seq_len = seq_len
        self.samples_per_epoch = samples_per_epoch
        self.eval_windows = eval_windows
        self._meta: dict[str, Any] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = read_meta(self.data_dir)
        return self._meta

    @property
    def num_classes(self) -> int:
        return self.meta["vocab_size"]

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    @property
    def input_shape(self) -> tuple[int]:
        return (self.seq_len,)

    def _tokens_in(self, split: str) -> int:
        path = token_file(self.data_dir, split)
        if not path.is_file():
            if split == "test":
                return 0  # a test split is optional
            raise DataNotFoundError(f"{path} is missing: `chainrule-prepare tokens ... --output "
                                    f"{self.data_dir}` writes train.bin, val.bin and test.bin")
        return path.stat().st_size // np.dtype(self.meta["dtype"]).itemsize

    def split_dataset(self, split: str) -> TokenWindows:
        tokens = self._tokens_in(split)
        side_by_side = max(0, (tokens - 1) // self.seq_len)
        if split == "train":
            if tokens <= self.seq_len:
                raise ConfigError(f"{token_file(self.data_dir, split)} holds {tokens} tokens, not more than "
                                  f"data.seq_len={self.seq_len}; use a shorter data.seq_len or more text")
            count = self.samples_per_epoch or side_by_side
        else:
            count = min(side_by_side, self.eval_windows or side_by_side)
        stride = (tokens - 1) // count if count else self.seq_len
        return TokenWindows(token_file(self.data_dir, split), self.meta["dtype"], self.seq_len, count, stride)
