"""A DDP job fails fast and loudly: a rank's exception ends every rank, and a config that cannot be
split over the ranks is refused before any further process starts. (Ranks that resolve different
configs: callbacks/test_config_agreement.py.)"""

import time
from pathlib import Path

import pytest

from tests.support.presets import DDP_RUN
from tests.support.processes import run_cli

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


@pytest.mark.parametrize("where", ["build", "step"])
def test_an_exception_on_one_rank_ends_the_job_non_zero_within_60_s(tmp_path: Path, where: str) -> None:
    """`build`: rank 1 dies before joining the process group, where rank 0 would otherwise wait for it
    for the rendezvous timeout (30 min). `step`: rank 1 dies while rank 0 is in a gradient all-reduce."""
    stamp = tmp_path / "raised_at"
    result = run_cli("chainrule-train", *DDP_RUN, "trainer=ddp_cpu", "trainer.devices=2",
                     "+callbacks.fault._target_=tests.launch.faults.RaiseOnRank", "+callbacks.fault.rank=1",
                     f"+callbacks.fault.where={where}", f"+callbacks.fault.stamp={stamp}",
                     f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, timeout=180, merge_stderr=True)
    ended = time.time()
    assert result.returncode != 0
    # From the exception to the end of the job; process start-up (imports) is not part of it.
    after_raise = ended - float(stamp.read_text())
    assert after_raise <= 60, f"the job ended {after_raise:.0f} s after the raise"
    # The failing rank's own error, marked with its rank, is in the job's output.
    errors = [line for line in result.stdout.splitlines()
              if "RuntimeError: injected failure on rank 1" in line]
    assert errors and all(line.startswith("[rank 1] ") for line in errors), result.stdout[-3000:]
    if where == "build":  # rank 0 was stuck waiting for rank 1 to join: it was ended from outside
        assert "chainrule: error: rank 1" in result.stdout and "stopping the other ranks" in result.stdout


def test_a_batch_not_divisible_by_the_world_size_fails_before_spawning(tmp_path: Path) -> None:
    result = run_cli("chainrule-train", *DDP_RUN, "data.batch_size=33", "trainer=ddp_cpu",
                     "trainer.devices=2", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, timeout=120,
                     merge_stderr=True)
    assert result.returncode != 0
    message = "data.batch_size=33 (global) is not divisible by world size 2"
    assert message in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stdout
    assert "[rank 1]" not in result.stdout and "Initializing distributed" not in result.stdout
