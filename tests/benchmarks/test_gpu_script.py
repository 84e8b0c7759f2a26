"""The one-call GPU script runs every step at tiny size here (`--dry-run`), so it works when a GPU comes."""

import subprocess

import pytest

from tests.support.paths import BIN, REPO
from tests.support.processes import cli_env


@pytest.mark.slow
def test_gpu_script_dry_run_runs_every_benchmark() -> None:
    env = cli_env(PYTHON=str(BIN / "python"), BUDGET_S="900")
    result = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "failed or ran out of time" not in result.stderr, result.stderr[-3000:]
    ran = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert {"== step_overhead", "== startup", "== callback_costs"} <= {line.split(" (")[0] for line in ran}
    assert "gpu.sh: done in" in result.stdout
