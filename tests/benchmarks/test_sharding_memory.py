"""benchmarks/sharding_memory.py at tiny size: each of N FSDP ranks holds 1/N of the optimizer state a single
rank holds (within 10%, measured in the same run), and the GPU preset's code runs on the CPU (--dry-run)."""

import re
import sys

import pytest

from tests.support.paths import REPO
from tests.support.processes import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def benchmark(*args: str) -> str:
    result = run_cli(sys.executable, "-m", "benchmarks.sharding_memory", *args, "--no-record", cwd=REPO,
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def rows(text: str, title: str) -> list[list[str]]:
    """The data rows of the Markdown table under `### <title>...`."""
    table = text[text.index(f"### {title}"):].split("\n\n")[1]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def kib(cell: str) -> float:
    number, unit = cell.split()
    return float(number) * {"B": 1 / 1024, "KiB": 1, "MiB": 1024, "GiB": 1024**2}[unit]


@pytest.fixture(scope="module")
def tiny() -> str:
    return benchmark("--preset", "tiny")


def test_each_of_n_ranks_holds_one_nth_of_the_optimizer_state(tiny: str) -> None:
    table = {int(row[2]): row for row in rows(tiny, "Training state per rank")}
    assert sorted(table) == [1, 2, 4]
    one = kib(table[1][5])
    for ranks in (2, 4):
        assert kib(table[ranks][5]) == pytest.approx(one / ranks, rel=0.1), table[ranks]
        assert float(table[ranks][7]) == pytest.approx(1 / ranks, rel=0.1)
        # Parameters and gradients shard alike.
        assert kib(table[ranks][3]) == pytest.approx(kib(table[1][3]) / ranks, rel=0.1)


def test_the_budget_table_fits_larger_models_on_more_ranks(tiny: str) -> None:
    budget = rows(tiny, "Largest GPT whose training state fits")
    per_parameter = [float(row[1]) for row in budget]
    assert per_parameter[0] == pytest.approx(16, rel=0.01)  # fp32 parameters, gradients, two Adam moments
    sizes = [int(re.search(r"\(([\d,]+) M\)", row[3]).group(1).replace(",", "")) for row in budget]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_the_gpu_preset_runs_its_code_on_the_cpu_in_a_dry_run() -> None:
    table = rows(benchmark("--preset", "gpu", "--dry-run"), "FSDP against DDP on one device")
    assert [row[0] for row in table] == ["ddp", "fsdp", "fsdp+ac"]
    assert all(float(row[6]) > 0 for row in table)  # ms per step
