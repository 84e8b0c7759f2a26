"""Fixtures for the backprop-tooling tests (gradient check, gradient health, finders, overfit preset)."""

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# This machine's few cores are shared: torch's intra-op threads then spin against each other and a tiny
# forward pass takes 50x longer. One thread per test process keeps these tests fast; results are the same.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of the CSV logger's metrics file (<run dir>/csv/metrics.csv), empty cells dropped."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
