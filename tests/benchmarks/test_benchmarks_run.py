"""Every benchmark script runs to its table at tiny size (the figures themselves come from full runs)."""

import sys

import pytest

from tests.support.paths import REPO
from tests.support.processes import run_cli

pytestmark = pytest.mark.slow

TINY = {
    "step_overhead": ["--preset", "tiny", "--no-record"],
    "startup": ["--repeats", "1", "--no-record"],
    "callback_costs": ["--preset", "tiny", "--no-record"],
    "time_to_accuracy": ["--no-record"],
    "gradient_health_overhead": ["--pairs", "2", "--warmup-pairs", "0"],
    "wandb_overhead": ["--steps", "10", "--windows", "1"],
    # The GPU preset's code path (its models and loaders) at tiny sizes on the CPU.
    "data_path": ["--preset", "gpu", "--dry-run", "--no-record"],
}


# Benchmarks whose tiny run a test module of their own checks more closely (tests/benchmarks/test_<name>.py).
OWN_TESTS = {"sharding_memory"}


def test_every_benchmark_is_exercised() -> None:
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py") if p.read_text().count("def main(")}
    assert scripts == set(TINY) | OWN_TESTS
    assert all((REPO / "tests" / "benchmarks" / f"test_{name}.py").is_file() for name in OWN_TESTS)


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_prints_its_table(script: str, tmp_path) -> None:
    result = run_cli(sys.executable, "-m", f"benchmarks.{script}", *TINY[script], cwd=REPO,
                     env={"WANDB_DIR": str(tmp_path)}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each prints a table last: a header and at least one row of figures.
    last_lines = [line for line in result.stdout.strip().splitlines() if line.strip()][-3:]
    assert len(last_lines) == 3 and any(char.isdigit() for char in last_lines[-1]), result.stdout[-2000:]
