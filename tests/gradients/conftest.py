"""Fixtures for the backprop-tooling tests (gradient check, gradient health, finders, overfit preset)."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread in the test process too (see tests.support.processes.ONE_THREAD)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

