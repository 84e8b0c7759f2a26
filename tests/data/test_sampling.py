"""How samples are dealt to processes: each optimizer step's global batch is the same for any number of
processes and any accumulation, and evaluation sees every sample exactly once."""

from collections import Counter

import pytest

from chainrule.core.errors import ConfigError
from chainrule.data.sampling import GlobalBatchSampler, eval_batches


def step_batches(num_samples: int, batch: int, world: int, accumulation: int,
                 epoch: int = 0) -> list[set[int]]:
    """The set of samples each optimizer step uses, over all ranks and micro-steps."""
    per_rank = []
    for rank in range(world):
        sampler = GlobalBatchSampler(num_samples, batch, world, rank, accumulation, shuffle=True, seed=7)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    per_step = batch // world
    steps = len(per_rank[0]) // per_step
    return [set().union(*(indices[s * per_step:(s + 1) * per_step] for indices in per_rank))
            for s in range(steps)]


@pytest.mark.parametrize("world, accumulation", [(2, 1), (2, 2), (4, 1), (1, 4), (3, 2)])
def test_each_step_takes_the_same_global_batch_as_one_process(world: int, accumulation: int) -> None:
    single = step_batches(203, 24, 1, 1, epoch=1)
    assert step_batches(203, 24, world, accumulation, epoch=1) == single
    assert len(single) == 203 // 24 and all(len(batch) == 24 for batch in single)


def test_epochs_reshuffle_and_no_sample_repeats_within_an_epoch() -> None:
    first, second = step_batches(96, 16, 2, 1, epoch=0), step_batches(96, 16, 2, 1, epoch=1)
    assert first != second
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(96))


def test_micro_batches_have_the_per_device_size() -> None:
    sampler = GlobalBatchSampler(100, 32, world_size=2, rank=1, accumulate_grad_batches=2)
    assert sampler.micro_batch_size == 8
    assert len(sampler) == len(list(sampler)) == 3 * 2 * 8


def test_a_batch_larger_than_the_training_split_is_refused() -> None:
    message = r"data.batch_size=64 .*larger than the training split \(50 samples\)"
    with pytest.raises(ConfigError, match=message):
        GlobalBatchSampler(50, 64)


@pytest.mark.parametrize("num_samples, batch_size, world",
                         [(45, 16, 2), (67, 16, 2), (10, 1, 3), (7, 100, 4), (64, 8, 2)])
def test_evaluation_sees_every_sample_once_in_equal_numbers_of_batches(num_samples: int, batch_size: int,
                                                                       world: int) -> None:
    ranks = [eval_batches(num_samples, batch_size, world, rank) for rank in range(world)]
    assert len({len(batches) for batches in ranks}) == 1  # DDP forwards in lockstep
    assert all(batch for batches in ranks for batch in batches)
    counts = Counter(i for batches in ranks for batch in batches for i in batch)
    assert sorted(counts) == list(range(num_samples)) and set(counts.values()) == {1}


def test_evaluation_refuses_fewer_samples_than_processes() -> None:
    with pytest.raises(ConfigError, match="3 samples, fewer than the 4 processes"):
        eval_batches(3, 8, world_size=4, rank=0)
