"""What a user meets with default paths, loggers and callbacks: run directories that are unique, stay one
run's own and survive being moved; runs that train nothing end cleanly; runs say why they stopped;
secrets reach no file; a folder that cannot be written is refused in one line.

Each run is cut short with the one documented shortcut, CHAINRULE_QUICK=1 (README, "Try a command
quickly").
"""

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.checkpoints import read_checkpoint
from tests.support.metrics import read_metric, read_metrics
from tests.support.processes import ONE_THREAD, run_cli, start

pytestmark = pytest.mark.slow
QUICK = {"CHAINRULE_QUICK": "1", **ONE_THREAD}


def train(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("chainrule-train", *args, cwd=cwd, env={**QUICK, **(env or {})})


def runs(cwd: Path) -> list[Path]:
    return sorted((cwd / "logs" / "train" / "runs").iterdir())


def fingerprint(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one `chainrule: error:` line of a refused command (asserted to be all it printed)."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished default run (3 epochs of 2 batches), in a user's directory with default paths."""
    home = tmp_path_factory.mktemp("user")
    result = train(cwd=home)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = runs(home)
    return run_dir


def test_two_runs_started_together_get_a_directory_each(tmp_path: Path) -> None:
    processes = [start("chainrule-train", "logger=csv", cwd=tmp_path, env=QUICK, output=subprocess.DEVNULL)
                 for _ in range(2)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    first, second = runs(tmp_path)
    for run_dir in (first, second):  # each complete and its own: one record, one metrics history
        assert (run_dir / ".hydra" / "overrides.yaml").is_file()
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert read_metric(run_dir, "test/acc")


def test_a_second_process_in_a_running_run_directory_is_refused_and_the_run_goes_on(tmp_path: Path) -> None:
    first = start("chainrule-train", "trainer.max_epochs=100000", "callbacks.early_stopping=null", cwd=tmp_path,
                  env=QUICK, output=subprocess.DEVNULL)
    try:
        lock = wait_for(lambda: next((p for p in (tmp_path / "logs").rglob(".hydra/run.lock")
                                      if p.read_text()), None))
        run_dir = lock.parent.parent
        for second in (train(f"resume={run_dir}", cwd=tmp_path), train("resume=latest", cwd=tmp_path)):
            line = refusal(second)
            assert f"{run_dir} is in use by another chainrule process (pid {first.pid} on " in line
            assert f"kill {first.pid}" in line
        assert first.poll() is None  # the run goes on
    finally:
        first.terminate()
        first.wait(timeout=120)
    again = train(f"resume={run_dir}", "trainer.max_steps=1", cwd=tmp_path)  # once it ended, it resumes
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]


def wait_for(found: Callable[[], Path | None], timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while (value := found()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


def test_a_run_directory_is_not_taken_by_a_run_with_other_settings(finished_run: Path) -> None:
    before = fingerprint(finished_run)
    line = refusal(train(f"hydra.run.dir={finished_run}", "model.width=32", cwd=finished_run.parent))
    assert "holds a run with other settings (model.width: (default) -> 32)" in line
    line = refusal(train(f"resume={finished_run}", "model.width=32", cwd=finished_run.parent))
    assert "changes model.width: (default) -> 32" in line
    assert fingerprint(finished_run) == before  # nothing written, nothing rewritten


def test_a_moved_run_resumes_from_its_own_files_and_trains_further(finished_run: Path,
                                                                    tmp_path: Path) -> None:
    moved = tmp_path / "moved runs été" / "run one"
    shutil.copytree(finished_run, moved)
    rows = len(read_metrics(moved))
    result = train(f"resume={moved}", "trainer.max_epochs=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(moved / "checkpoints" / "last.ckpt")["global_step"] == 10  # 5 epochs x 2 batches
    assert len(read_metrics(moved)) > rows  # the history goes on, nothing of it lost
    assert read_metrics(moved)[:rows - 1] == read_metrics(finished_run)[:rows - 1]  # all but the old test row
    record = (moved / "finished.json").read_text()
    assert str(finished_run) not in record and '"checkpoints/' in record
    best = run_cli("chainrule-eval", f"ckpt_path={moved}", cwd=tmp_path, env=QUICK)
    assert best.returncode == 0 and str(moved / "checkpoints") in best.stdout + best.stderr


def test_a_refused_resume_leaves_the_run_resumable(finished_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    refusal(train(f"resume={copy}", "optim=sgd", cwd=tmp_path))
    assert train(f"resume={copy}", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("setting", ["trainer.max_epochs=0", "trainer.max_steps=0",
                                     "trainer.limit_train_batches=0"])
def test_a_run_that_trains_nothing_ends_cleanly_and_resumes(tmp_path: Path, setting: str) -> None:
    result = train(setting, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = runs(tmp_path)
    again = train(f"resume={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]


def test_logger_none_trains(tmp_path: Path) -> None:
    result = train("logger=none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_early_stopping_says_so_and_its_run_trains_on_only_when_asked(tmp_path: Path) -> None:
    result = train("trainer.max_epochs=10", "callbacks.early_stopping.patience=0",
                   "callbacks.early_stopping.min_delta=100", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training stopped: early stopping at epoch 1:" in result.stdout + result.stderr
    (run_dir,) = runs(tmp_path)
    stopped = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]

    before = fingerprint(run_dir / "checkpoints"), (run_dir / "finished.json").read_text()
    again = train("resume=latest", cwd=tmp_path)  # as it is: the run is done, it is only tested again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished already (early stopping at epoch 1:" in again.stdout + again.stderr
    assert "change trainer.max_epochs, trainer.max_steps or trainer.max_time to train it further" in again.stdout
    assert (fingerprint(run_dir / "checkpoints"), (run_dir / "finished.json").read_text()) == before

    further = train("resume=latest", "trainer.max_epochs=20", "callbacks.early_stopping=null", cwd=tmp_path)
    assert further.returncode == 0, further.stderr[-3000:]
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 20 * stopped // 2
    assert "reached trainer.max_epochs=20" in (run_dir / "finished.json").read_text()


def test_secret_named_values_reach_no_file(tmp_path: Path) -> None:
    secret = "TopSecret-1f2e3d"
    result = train(f"+service.api_key={secret}", f"+service.password={secret}x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert secret not in result.stdout + result.stderr
    (run_dir,) = runs(tmp_path)
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []
    assert "<redacted>" in (run_dir / ".hydra" / "config.yaml").read_text()


def test_eval_finds_the_latest_run_and_a_run_directory(finished_run: Path) -> None:
    home = finished_run.parents[3]
    trained = read_metric(finished_run, "test/acc")[-1]
    for value in ("latest", str(finished_run)):
        before = set((home / "logs" / "eval" / "runs").glob("*"))
        result = run_cli("chainrule-eval", f"ckpt_path={value}", cwd=home, env=QUICK)
        assert result.returncode == 0, result.stderr[-3000:]
        (eval_dir,) = set((home / "logs" / "eval" / "runs").glob("*")) - before
        assert read_metric(eval_dir, "test/acc")[-1] == pytest.approx(trained, abs=1e-6)


def test_eval_without_a_checkpoint_says_what_to_pass(tmp_path: Path) -> None:
    assert "ckpt_path is missing: pass ckpt_path=<value>" in refusal(run_cli("chainrule-eval", cwd=tmp_path))


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system for the test needs root")


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@ROOT_ONLY
def test_a_folder_that_cannot_be_written_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "ro") as mount:
        assert "cannot write into" in refusal(train(f"paths.log_dir={mount}/logs", cwd=tmp_path))


@ROOT_ONLY
def test_a_full_disk_ends_the_run_with_one_message(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "size=160k") as mount:
        result = train(f"paths.log_dir={mount}/logs", "logger=csv", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("chainrule: error: cannot write") and "No space left on device" in last
