"""An interrupted and resumed run ends bit-for-bit where an uninterrupted one does.

Each test kills or signals a real `chainrule-train` process, resumes it with `chainrule-train
resume=<run dir>`, and compares the final parameters, optimizer state and LR schedule with the
uninterrupted reference run using torch.equal.
"""

import random
import signal
from pathlib import Path

import pytest
import torch

from chainrule.checkpointing.discovery import newest_intact_checkpoint
from tests.support.interruptions import output, pause_at, start, wait_until
from tests.support.pause_point import HOOKS
from tests.support.presets import DETERMINISTIC_RUN_STEPS, DETERMINISTIC_RUN_STEPS_PER_EPOCH
from tests.training.conftest import assert_same_result, resume

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def kill_points(seed: int = 3, count: int = 5) -> list[tuple[int, str]]:
    """(step, hook) pairs drawn from a seeded RNG; validation only runs at epoch ends (steps 10, 20, 30)."""
    rng = random.Random(seed)
    points = []
    for _ in range(count):
        hook = rng.choice(HOOKS[:4])  # the hooks of a training step and of validation
        step = (
            rng.choice([10, 20, 30])
            if hook == "validation_batch_start"
            else rng.randrange(5, DETERMINISTIC_RUN_STEPS - 1)
        )
        points.append((step, hook))
    return points


KILL_POINTS = kill_points()
assert (
    sum(step % DETERMINISTIC_RUN_STEPS_PER_EPOCH != 0 for step, _ in KILL_POINTS) >= 3
), "most kill points must be mid-epoch"


@pytest.mark.parametrize(("step", "hook"), KILL_POINTS, ids=[f"step{s}-{h}" for s, h in KILL_POINTS])
def test_sigkill_then_resume_is_bitwise_identical(
    tmp_path: Path, reference: Path, step: int, hook: str
) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    process = start(run_dir, *pause_at(step, hook, marker))
    # Every kill point lies after the first checkpoint (step 4), but checkpoints are written in the
    # background: while the process waits at its point, its writer finishes that one.
    wait_until(lambda: marker.exists() and newest_intact_checkpoint(run_dir) is not None, process, run_dir)
    process.kill()  # SIGKILL: no handler runs, nothing is flushed
    assert process.wait(timeout=60) == -signal.SIGKILL

    resumed = resume(run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # It continued from a checkpoint ...
    assert "resuming from " in resumed.stdout + resumed.stderr
    # ... and ended exactly where the uninterrupted run did.
    assert_same_result(run_dir, reference)


@pytest.mark.parametrize(
    ("signum", "how"),
    [(signal.SIGTERM, "requeue"), (signal.SIGINT, "resume")],
    ids=["SIGTERM-then-requeue", "SIGINT-then-resume"],
)
def test_signal_saves_a_checkpoint_and_resume_is_bitwise_identical(
    tmp_path: Path, reference: Path, signum: signal.Signals, how: str
) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    # Held at the start of step 17 (not a checkpoint step) until the signal arrives.
    overrides = pause_at(17, "train_batch_start", marker, seconds=120)
    process = start(run_dir, *overrides)
    wait_until(marker.exists, process, run_dir)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 128 + signum, output(run_dir)[-3000:]
    assert f"{signum.name} received: saved" in output(run_dir)
    assert "Traceback" not in output(run_dir)

    saved = torch.load(run_dir / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert saved["global_step"] == 18  # step 17 finished, then the checkpoint, then the exit

    if how == "requeue":  # a requeued job runs the same command in the same run directory again
        assert start(run_dir, *overrides).wait(timeout=300) == 0, output(run_dir)[-3000:]
        text = output(run_dir)
    else:
        resumed = resume(run_dir)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        text = resumed.stdout + resumed.stderr
    assert f"resuming from {run_dir / 'checkpoints' / 'interrupted.ckpt'}" in text
    assert_same_result(run_dir, reference)


@pytest.mark.multiprocess
def test_ddp_ranks_stop_together_on_sigterm_and_resume_bitwise_identically(tmp_path: Path) -> None:
    """Two gloo ranks: per-rank RNG states and data shards survive the interruption."""
    ddp = ["trainer.devices=2", "+trainer.strategy=ddp", "trainer.max_epochs=2"]
    reference_dir, run_dir, marker = tmp_path / "reference", tmp_path / "run", tmp_path / "paused"
    assert start(reference_dir, *ddp).wait(timeout=400) == 0, output(reference_dir)[-3000:]

    process = start(run_dir, *ddp, *pause_at(7, "train_batch_start", marker, seconds=120))
    wait_until(marker.exists, process, run_dir)
    process.send_signal(signal.SIGTERM)  # to rank 0 only: rank 1 learns of it through the ranks' agreement
    assert process.wait(timeout=120) == 128 + signal.SIGTERM, output(run_dir)[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert len(saved["callbacks"]["RngStatesInCheckpoint"]["ranks"]) == 2

    resumed = resume(run_dir, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_same_result(run_dir, reference_dir / "checkpoints" / "last.ckpt")


def test_truncated_newest_checkpoint_is_skipped_with_a_warning(tmp_path: Path, reference: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    process = start(run_dir, *pause_at(25, "train_batch_start", marker))
    wait_until(marker.exists, process, run_dir)
    process.kill()
    process.wait(timeout=60)

    folder = run_dir / "checkpoints"
    newest, previous = folder / "step000024.ckpt", folder / "step000020.ckpt"
    assert newest.samefile(folder / "last.ckpt")  # the newest state has two names, one file
    data = newest.read_bytes()
    with open(newest, "r+b") as f:  # what a crash mid-write would leave without atomic writes
        f.truncate(len(data) // 2)

    resumed = resume(run_dir)
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, text[-3000:]
    assert f"skipping damaged checkpoint {folder / 'last.ckpt'}" in text
    assert f"resuming from {previous}" in text
    assert_same_result(run_dir, reference)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, reference: Path) -> None:
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    # The test knob of chainrule.checkpointing.io.AtomicCheckpointIO: each write takes 4 s.
    process = start(run_dir, "trainer.plugins.0.write_delay_s=4")

    def writing_after_a_complete_checkpoint() -> bool:
        return folder.is_dir() and any(folder.glob("*.ckpt")) and any(folder.glob(".*.tmp"))

    wait_until(writing_after_a_complete_checkpoint, process, run_dir)
    process.kill()
    process.wait(timeout=60)

    partial = list(folder.glob(".*.tmp"))
    complete = list(folder.glob("*.ckpt"))
    assert partial and complete
    # The interrupted write never reached a checkpoint name; every named file loads.
    for path in complete:
        assert torch.load(path, weights_only=True)["global_step"] > 0

    resumed = resume(run_dir, "trainer.plugins.0.write_delay_s=0")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from " in resumed.stdout + resumed.stderr
    assert not list(folder.glob(".*.tmp")), "the resumed run removes what the killed writer left"
    assert_same_result(run_dir, reference)


def test_a_finished_run_is_not_trained_again(tmp_path: Path, reference: Path) -> None:
    run_dir = reference.parent.parent
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()}
    resumed = resume(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished already" in resumed.stdout + resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()} == before
