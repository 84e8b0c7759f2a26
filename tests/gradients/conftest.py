"""Fixtures for the backprop-tooling tests (gradient check, gradient health, finders, overfit preset)."""

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread in the test process too (see tests.support.processes.ONE_THREAD)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of the CSV logger's metrics file (<run dir>/csv/metrics.csv), empty cells dropped."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
