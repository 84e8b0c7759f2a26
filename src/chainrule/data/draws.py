"""Random draws made while loading a sample (an augmentation, a random window) that do not depend on which
process or worker loads it, nor on what was loaded before.

A data loader worker's random generators are seeded once when the worker starts, from the loader's
generator, and then advance with every sample the worker happens to load. A resumed run starts fresh
workers at another point of that sequence, and a different number of workers or ranks deals the samples
differently, so the draws (and the trained weights) would differ. Here each sample's draws come instead
from a seed that is a pure function of (seed, epoch, sample index): the same sample in the same epoch is
augmented the same way by any worker of any rank, before and after a resume.
"""

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers that scatters nearby inputs."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def draw_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample `index`'s random draws in `epoch` of a run seeded with `seed`: 63 bits, the same
    on every machine and in every process."""
    x = 0
    for part in (seed, epoch, index):
        x = _mix(x ^ (part & MASK64))
    return x >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside: torch's CPU generator, numpy's and Python's global generators seeded from `seed`; after: each
    as it was (in the training process, dropout masks must not notice the data's draws). CUDA generators
    are left alone."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class SeededSampler(Sampler[tuple[int, int]]):
    """Wraps a sampler of indices that has an `epoch` (chainrule.data.sampling.GlobalBatchSampler) and
    yields `(index, draw_seed(seed, epoch, index))`: a dataset that draws random numbers takes these keys.
    `set_epoch`, `resume_at` and the per-device batch size are the wrapped sampler's."""

    def __init__(self, sampler: Any, seed: int):
        self.sampler = sampler
        self.seed = seed

    @property
    def micro_batch_size(self) -> int:
        return self.sampler.micro_batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def resume_at(self, position: dict[str, int]) -> None:
        self.sampler.resume_at(position)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((index, draw_seed(self.seed, epoch, index)) for index in self.sampler)


def split_key(key: int | tuple[int, int]) -> tuple[int, int | None]:
    """(index, draw seed or None) of a dataset key: a plain index (evaluation) or a SeededSampler pair."""
    if isinstance(key, tuple):
        return key
    return int(key), None
