"""`chainrule-consolidate`: one checkpoint file from a sharded checkpoint, which chainrule-eval tests on a
trainer that does not shard exactly as the sharded run tested it. (Run as `python -m
chainrule.cli.consolidate`: the console script exists once the package is reinstalled.)"""

import re
import sys
from pathlib import Path

import pytest
import torch

from chainrule.checkpointing.dcp import consolidate
from chainrule.checkpointing.io import is_intact
from tests.support.metrics import read_metric
from tests.support.presets import NO_PROGRESS_BARS
from tests.support.processes import ONE_THREAD, run_cli

pytestmark = pytest.mark.slow

QUICK = {"CHAINRULE_QUICK": "1", **ONE_THREAD}


def consolidate_cli(*args: str, cwd: Path):
    return run_cli(sys.executable, "-m", "chainrule.cli.consolidate", *args, cwd=cwd, env=QUICK,
                   merge_stderr=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sharded GPT run (one rank: what is consolidated does not depend on how many wrote it)."""
    cwd = tmp_path_factory.mktemp("user")
    result = run_cli("chainrule-train", "experiment=tokens_gpt", "trainer=fsdp_cpu", "trainer.devices=1",
                     "logger=csv", *NO_PROGRESS_BARS, cwd=cwd, env=QUICK, merge_stderr=True)
    assert result.returncode == 0, result.stdout[-3000:]
    (found,) = (cwd / "logs" / "tokens_gpt" / "runs").iterdir()
    return found


@pytest.fixture(scope="module")
def consolidated(run_dir: Path) -> tuple[str, Path]:
    """(what chainrule-consolidate ckpt_path=latest printed, the file it wrote)."""
    result = consolidate_cli("ckpt_path=latest", cwd=run_dir.parents[3])
    assert result.returncode == 0, result.stdout[-3000:]
    (best,) = (run_dir / "checkpoints").glob("epoch*.ckpt")  # latest: the finished run's best checkpoint
    return result.stdout, best.with_name(best.stem + ".consolidated.pt")


def test_consolidation_writes_one_file_that_chainrule_eval_tests_alike(run_dir: Path, consolidated) -> None:
    cwd = run_dir.parents[3]
    printed, output = consolidated
    (best,) = (run_dir / "checkpoints").glob("epoch*.ckpt")
    assert output.is_file() and is_intact(output)
    assert f"test it with: chainrule-eval ckpt_path={output}" in printed

    single, sharded = torch.load(output, weights_only=True), consolidate(best)
    assert single["global_step"] == sharded["global_step"] > 0
    assert all(torch.equal(single["state_dict"][k], v) for k, v in sharded["state_dict"].items())
    assert single["optimizer_states"][0]["state"] and "chainrule_config" in single

    evaluated = run_cli("chainrule-eval", f"ckpt_path={output}", f"hydra.run.dir={cwd}/eval", cwd=cwd, env=QUICK,
                        merge_stderr=True)
    assert evaluated.returncode == 0, evaluated.stdout[-3000:]
    # The sharded run tested its best checkpoint at its end; one process, from the file, finds the same.
    assert read_metric(cwd / "eval", "test/loss") == pytest.approx(read_metric(run_dir, "test/loss"), rel=1e-6)


def test_eval_without_sharding_says_how_to_read_a_sharded_checkpoint(run_dir: Path) -> None:
    result = run_cli("chainrule-eval", f"ckpt_path={run_dir}", cwd=run_dir.parents[3], env=QUICK)
    assert result.returncode == 2
    assert re.fullmatch(r"chainrule: error: \S+ is a sharded checkpoint .*chainrule-consolidate ckpt_path=\S+\n",
                        result.stderr), result.stderr[-2000:]


def test_a_checkpoint_file_needs_no_consolidation(run_dir: Path, consolidated) -> None:
    _, output = consolidated
    result = consolidate_cli(f"ckpt_path={output}", cwd=run_dir.parents[3])
    assert result.returncode == 2 and "is one file already" in result.stdout, result.stdout[-2000:]
