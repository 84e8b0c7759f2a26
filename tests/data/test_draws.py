"""Random draws per sample: a pure function of (seed, epoch, index), the same for any number of ranks,
and invisible to the training process's own random streams."""

import random

import numpy as np
import torch

from chainrule.data.draws import SeededSampler, draw_seed, seeded
from chainrule.data.sampling import GlobalBatchSampler


def test_draw_seeds_differ_between_samples_epochs_and_seeds_and_repeat_exactly() -> None:
    seeds = {draw_seed(s, e, i) for s in (0, 1) for e in (0, 1, 2) for i in range(100)}
    assert len(seeds) == 2 * 3 * 100
    assert draw_seed(12345, 3, 17) == draw_seed(12345, 3, 17)
    assert all(0 <= s < 2**63 for s in seeds)


def test_seeded_draws_repeat_and_leave_the_outer_streams_as_they_were() -> None:
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    with seeded(draw_seed(1, 2, 3)):
        first = torch.rand(4), random.random(), np.random.rand()
    with seeded(draw_seed(1, 2, 3)):
        again = torch.rand(4), random.random(), np.random.rand()
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    after = torch.rand(3), random.random(), np.random.rand()
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]


def test_each_sample_gets_the_same_seed_on_any_rank_and_after_a_resume() -> None:
    def keys(world: int, rank: int, position: dict | None = None) -> list[tuple[int, int]]:
        sampler = SeededSampler(GlobalBatchSampler(64, 16, world, rank, seed=5), seed=5)
        sampler.set_epoch(2)
        if position:
            sampler.resume_at(position)
        return list(sampler)

    single = dict(keys(1, 0))
    assert len(single) == 64
    for rank in range(2):
        assert all(single[index] == seed for index, seed in keys(2, rank))
    resumed = keys(1, 0, {"epoch": 2, "batches": 3})
    assert resumed == keys(1, 0)[3 * 16:]
