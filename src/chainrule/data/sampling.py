"""Which samples each process loads, so that N processes compute what one process would.

Training: the order is defined for the *global* batch and then sharded. Every optimizer step takes the
next `global_batch_size` samples of one seeded permutation; process r loads the r-th slice of each
accumulation micro-step. The union of all processes' micro-batches in a step is exactly the batch one
process would take, so data-parallel training is the same optimization as single-process training
(torch's DistributedSampler instead deals samples round-robin over an order that depends on the world
size, and pads with repeated samples).

Evaluation: each sample is evaluated exactly once across processes (no padding), and every process runs
the same number of batches, because DDP may run a collective in each forward (buffer broadcast) and a
process with one batch more would wait forever.
"""

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from chainrule.core.errors import ConfigError
from chainrule.data.batching import per_device_batch_size


class GlobalBatchSampler(Sampler[int]):
    """Sample indices of one process's micro-batches, in order; load them with
    `DataLoader(batch_size=sampler.micro_batch_size, sampler=sampler)`, or take the micro-batches whole as
    index tensors from `micro_batches()` (chainrule.data.device_batches). Both come from `micro_batches()`,
    so the two paths cannot disagree.

    Each epoch uses `torch.randperm(num_samples)` seeded with `seed + epoch` (Lightning calls
    `set_epoch`), or the natural order when `shuffle` is false. The last incomplete global batch is
    dropped: every optimizer step sees exactly `global_batch_size` samples.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        accumulate_grad_batches: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.micro_batch_size = per_device_batch_size(global_batch_size, world_size, accumulate_grad_batches)
        self.steps = num_samples // global_batch_size
        if self.steps == 0:
            raise ConfigError(
                f"data.batch_size={global_batch_size} (global) is larger than the training split "
                f"({num_samples} samples); use data.batch_size <= {num_samples}"
            )
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.world_size = world_size
        self.rank = rank
        self.accumulate_grad_batches = accumulate_grad_batches
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._skip = 0  # micro-batches the next pass leaves out (a resume mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, position: dict[str, int]) -> None:
        """Make the next pass run epoch `position["epoch"]` from its micro-batch `position["batches"]`
        (see chainrule.data.resumable); `len()` stays the full epoch, as Lightning counts done batches."""
        self.set_epoch(position["epoch"])
        self._skip = position["batches"]

    @property
    def num_micro_batches(self) -> int:
        """This process's micro-batches per epoch (Lightning's batches): steps x accumulation."""
        return self.steps * self.accumulate_grad_batches

    def __len__(self) -> int:
        return self.num_micro_batches * self.micro_batch_size

    def global_order(self) -> torch.Tensor:
        """This epoch's order of all samples, the same on every process."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def locate(self, n: int) -> tuple[int, slice]:
        """Where this process's micro-batch `n` of an epoch lies: its optimizer step, and the positions of its
        samples in that step's global batch. Step s takes the global batch order[s x global : (s + 1) x
        global]; its micro-step k the k-th world x micro samples of that, of which this process the
        rank-th micro."""
        step, k = divmod(n, self.accumulate_grad_batches)
        start = (k * self.world_size + self.rank) * self.micro_batch_size
        return step, slice(start, start + self.micro_batch_size)

    def micro_batches(self, device: torch.device | None = None) -> Iterator[torch.Tensor]:
        """This epoch's micro-batches of this process: int64 index tensors of `micro_batch_size`, on `device`
        (the epoch's order is copied there once, and each micro-batch is a view of it). A pass after
        `resume_at` starts at the resumed micro-batch; the epoch is read when the pass starts."""
        skip, self._skip = self._skip, 0
        order = self.global_order().to(device)
        for n in range(skip, self.num_micro_batches):
            step, part = self.locate(n)
            batch = order[step * self.global_batch_size:(step + 1) * self.global_batch_size]
            yield batch[part]

    def __iter__(self) -> Iterator[int]:
        for batch in self.micro_batches():
            yield from batch.tolist()


def eval_index_batches(num_samples: int, batch_size: int, world_size: int = 1,
                       rank: int = 0) -> list[torch.Tensor]:
    """One process's evaluation batches as int64 index tensors (contiguous ranges of samples).

    The samples are split into `world_size` contiguous shares differing by at most one sample, and
    every process gets the same number of batches of about `batch_size` samples each. Over all
    processes each sample appears exactly once, so summed metrics equal the single-process ones.
    """
    if num_samples == 0:
        return []
    if num_samples < world_size:
        raise ConfigError(
            f"an evaluation split has {num_samples} samples, fewer than the {world_size} processes; "
            f"use fewer devices or a larger data.val_fraction / data.test_fraction"
        )
    # Each process needs at least one sample per batch, hence the cap at the smallest share.
    steps = min(math.ceil(num_samples / (world_size * batch_size)), num_samples // world_size)
    share = torch.tensor_split(torch.arange(num_samples), world_size)[rank]
    return list(torch.tensor_split(share, steps))


def eval_batches(num_samples: int, batch_size: int, world_size: int = 1, rank: int = 0) -> list[list[int]]:
    """`eval_index_batches` as lists of indices: a `batch_sampler` for DataLoader."""
    return [batch.tolist() for batch in eval_index_batches(num_samples, batch_size, world_size, rank)]
