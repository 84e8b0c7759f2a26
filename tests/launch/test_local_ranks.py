"""DDP started from the command line on one node (`chainrule-train trainer=ddp_cpu trainer.devices=2`),
inside a Hydra multirun: exactly one run per sweep job, each equal to a single process.

One multirun sweeps gradient accumulation (1, 2) so that both the multirun guarantees and the equality
with and without accumulation come from one command (each process pays ~10 s of imports)."""

from pathlib import Path

import pytest

from tests.support.checkpoints import assert_same_parameters, files_in
from tests.support.metrics import read_metric, read_metrics
from tests.support.presets import DDP_RUN
from tests.support.processes import run_cli

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(working directory, console output) of a 2-job sweep, each job 2 gloo ranks."""
    cwd = tmp_path_factory.mktemp("multirun")
    result = run_cli("chainrule-train", "-m", *DDP_RUN, "trainer=ddp_cpu", "trainer.devices=2",
                     "trainer.accumulate_grad_batches=1,2", f"hydra.sweep.dir={cwd}/sweep", cwd=cwd,
                     timeout=300, merge_stderr=True)
    assert result.returncode == 0, result.stdout[-5000:]
    return cwd, result.stdout


def test_multirun_with_ddp_gives_exactly_one_run_per_job(multirun: tuple[Path, str]) -> None:
    cwd, output = multirun
    assert sorted(p.name for p in cwd.iterdir()) == ["sweep"]  # no rank made a sweep of its own
    assert sorted(p.name for p in (cwd / "sweep").iterdir()) == ["0", "1", "multirun.yaml"]
    assert output.count("Launching 2 jobs locally") == 1
    # Each job ran with two ranks, rank 1 started once per job.
    assert output.count("Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2") == 2
    assert output.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2


def test_each_run_directory_is_written_once_by_rank_0(multirun: tuple[Path, str],
                                                       single_process_run: Path) -> None:
    """Same files as a single-process run: one config, one log, one metrics file, one best and one last
    checkpoint (a second writer would add e.g. `last-v1.ckpt` or a rank's own log)."""
    cwd, _ = multirun
    expected = files_in(single_process_run)
    assert {".hydra/config.yaml", "train.log", "csv/metrics.csv", "checkpoints/last.ckpt"} <= expected
    for job in ("0", "1"):
        run_dir = cwd / "sweep" / job
        assert files_in(run_dir) == expected
        for metric in ("val/loss", "test/loss"):  # once per validation (2 epochs) and once for the test
            assert len(read_metric(run_dir, metric)) == len(read_metric(single_process_run, metric))
    # Without accumulation, the very same rows as the single process.
    assert len(read_metrics(cwd / "sweep" / "0")) == len(read_metrics(single_process_run))


def test_other_ranks_console_lines_carry_their_rank(multirun: tuple[Path, str]) -> None:
    _, output = multirun
    lines = output.splitlines()
    rank_1 = [line for line in lines if "GLOBAL_RANK: 1" in line]
    assert len(rank_1) == 2 and all(line.startswith("[rank 1] ") for line in rank_1)
    assert all(line.startswith("Initializing") for line in lines if "GLOBAL_RANK: 0" in line)


@pytest.mark.parametrize("job, accumulation", [("0", 1), ("1", 2)])
def test_ddp_parameters_equal_single_process_on_the_same_global_batch(
    multirun: tuple[Path, str], single_process_run: Path, job: str, accumulation: int
) -> None:
    cwd, _ = multirun
    config = (cwd / "sweep" / job / ".hydra" / "config.yaml").read_text()
    assert f"accumulate_grad_batches: {accumulation}" in config
    assert_same_parameters(cwd / "sweep" / job / "checkpoints" / "last.ckpt",
                           single_process_run / "checkpoints" / "last.ckpt")


def test_ddp_logs_the_metrics_one_process_logs(multirun: tuple[Path, str], single_process_run: Path) -> None:
    """Per-step training loss (of the global batch), validation and test metrics, with and without
    accumulation. The checkpoints differ by float rounding only, hence the tolerance."""
    cwd, _ = multirun
    for job in ("0", "1"):
        for metric in ("train/loss_epoch", "val/loss", "val/acc", "test/loss", "test/acc"):
            ddp, single = read_metric(cwd / "sweep" / job, metric), read_metric(single_process_run, metric)
            assert ddp == pytest.approx(single, rel=1e-5), (job, metric)
    assert read_metric(cwd / "sweep" / "0", "train/loss_step") == pytest.approx(
        read_metric(single_process_run, "train/loss_step"), rel=1e-5)


def test_ddp_test_metrics_equal_single_process_on_the_same_checkpoint(single_process_run: Path,
                                                                       tmp_path: Path) -> None:
    """`chainrule-eval` on 2 ranks tests the checkpoint that the single process tested after training:
    45 samples split 23/22 over the ranks must give the same loss and accuracy (a sample duplicated by
    padding, or dropped, would change both)."""
    (best,) = (single_process_run / "checkpoints").glob("epoch*.ckpt")
    result = run_cli("chainrule-eval", f"ckpt_path={best}", "trainer=ddp_cpu", "trainer.devices=2",
                     "logger=csv", f"hydra.run.dir={tmp_path}/eval", cwd=tmp_path, merge_stderr=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "[rank 1] Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout
    for metric in ("test/loss", "test/acc"):
        ddp, single = read_metric(tmp_path / "eval", metric), read_metric(single_process_run, metric)
        assert len(ddp) == 1 and ddp == pytest.approx(single, rel=1e-6, abs=0), metric
