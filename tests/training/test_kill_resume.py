"""A run killed several times, at random points of every phase, and resumed each time with
`chainrule-train resume=<run dir>`, ends exactly as the same run uninterrupted: the same final weights,
bit for bit, and the same metrics history, row for row. Default loggers (W&B offline and CSV) and
default callbacks, as a user runs it."""

import random
import signal
from pathlib import Path

import pytest

from tests.support.interruptions import output, pause_at, start, start_resume, wait_until
from tests.support.metrics import read_metrics
from tests.support.presets import DEFAULTS_RUN, DEFAULTS_RUN_EPOCHS, DEFAULTS_RUN_STEPS_PER_EPOCH
from tests.training.conftest import assert_same_result, resume

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Columns that measure time, not training: they differ between any two runs.
TIMING = ("throughput/",)
TOTAL_STEPS = DEFAULTS_RUN_EPOCHS * DEFAULTS_RUN_STEPS_PER_EPOCH


def kill_points(seed: int) -> list[tuple[int, str]]:
    """(step, hook) in the order training reaches them: one during training, one while a checkpoint is
    written, one during validation, one after the last checkpoint, drawn from `seed`."""
    rng = random.Random(seed)
    epoch_end = DEFAULTS_RUN_STEPS_PER_EPOCH
    train_step = rng.randrange(2, epoch_end - 1)
    write_step = rng.choice([s for s in range(epoch_end, 2 * epoch_end + 1) if s % 4 == 0])
    validation_step = rng.choice([2, 3]) * epoch_end
    return [(train_step, rng.choice(["train_batch_start", "before_optimizer_step", "train_batch_end"])),
            (write_step, "save_checkpoint"),
            (validation_step, "validation_batch_start"),
            (TOTAL_STEPS, rng.choice(["fit_end", "test_batch_start"]))]


def history(run_dir: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if not k.startswith(TIMING)} for row in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    process = start(run_dir, preset=DEFAULTS_RUN)
    assert process.wait(timeout=300) == 0, output(run_dir)[-3000:]
    return run_dir


@pytest.mark.parametrize("seed", [11])
def test_killed_four_times_and_resumed_equals_the_uninterrupted_run(tmp_path: Path, uninterrupted: Path,
                                                                     seed: int) -> None:
    run_dir = tmp_path / "run"
    points = kill_points(seed)
    process = None
    for number, (step, hook) in enumerate(points):
        marker = tmp_path / f"point-{number}"
        overrides = pause_at(step, hook, marker)
        if process is None:
            process = start(run_dir, *overrides, "trainer.plugins.0.write_delay_s=1", preset=DEFAULTS_RUN)
        else:  # each resume also holds at the next point; the earlier markers exist, so they stay quiet
            process = start_resume(run_dir, *overrides)
        wait_until(marker.exists, process, run_dir)
        if hook == "save_checkpoint":
            checkpoints = run_dir / "checkpoints"
            wait_until(lambda: any(checkpoints.glob(".*.tmp")), process, run_dir)  # mid-write
        process.kill()
        assert process.wait(timeout=60) == -signal.SIGKILL

    finished = resume(run_dir)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert_same_result(run_dir, uninterrupted / "checkpoints" / "last.ckpt")
    assert history(run_dir) == history(uninterrupted)
    assert (run_dir / "plots" / "loss.png").is_file()

