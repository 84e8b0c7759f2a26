"""A sharded run (trainer=fsdp_cpu, 2 gloo ranks) killed while writing a checkpoint and resumed ends bit for
bit where the uninterrupted run ends; a checkpoint written by 2 ranks resumes on 1 rank and on 4 with the
very state that was saved (DCP maps the shards onto the new ranks)."""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from chainrule.checkpointing.sharded import read_manifest, remove
from tests.support.interruptions import pause_at, wait_until
from tests.support.presets import SHARDED_RESUME_RUN, SHARDED_RUN_STEPS
from tests.support.processes import ONE_THREAD, free_port, run_cli, start
from tests.support.sharded import whole
from tests.training.conftest import assert_equal_exactly

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(900)]

SAVED = "step000006.ckpt"  # a step checkpoint mid-epoch (4 steps per epoch), kept by the reference run


def launch(run_dir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`chainrule-train args...` in its own session (its ranks are its children: one killpg ends them all),
    output to <run dir>.log."""
    with open(f"{run_dir}.log", "a") as log:
        return start("chainrule-train", *args, cwd=run_dir.parent, env={**ONE_THREAD, **(env or {})},
                     output=log, new_session=True)


def log_of(run_dir: Path) -> str:
    path = Path(f"{run_dir}.log")
    return path.read_text() if path.exists() else ""


def training_state(path: Path) -> dict:
    checkpoint = whole(path)
    return {key: checkpoint[key] for key in ("global_step", "state_dict", "optimizer_states", "lr_schedulers")}


def assert_same_state(checkpoint: Path, reference: Path) -> None:
    ours, theirs = training_state(checkpoint), training_state(reference)
    for key in theirs:
        assert_equal_exactly(ours[key], theirs[key], key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run directory."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    process = launch(run_dir, *SHARDED_RESUME_RUN, f"hydra.run.dir={run_dir}")
    assert process.wait(timeout=300) == 0, log_of(run_dir)[-3000:]
    assert whole(run_dir / "checkpoints" / "last.ckpt")["global_step"] == SHARDED_RUN_STEPS
    assert (run_dir / "checkpoints" / SAVED).is_dir()
    return run_dir


def test_killed_while_writing_a_checkpoint_and_resumed_is_bitwise_identical(tmp_path: Path,
                                                                             reference: Path) -> None:
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    # The test knob of the checkpoint writer: each sharded checkpoint stays incomplete for 2 s.
    process = launch(run_dir, *SHARDED_RESUME_RUN, "trainer.plugins.0.write_delay_s=2",
                     f"hydra.run.dir={run_dir}")

    def writing_after_a_complete_checkpoint() -> bool:
        return folder.is_dir() and any(folder.glob("*.ckpt")) and any(folder.glob(".*.tmp"))

    wait_until(writing_after_a_complete_checkpoint, process, run_dir)
    os.killpg(process.pid, signal.SIGKILL)  # both ranks, mid-write: nothing is flushed
    process.wait(timeout=60)

    assert list(folder.glob(".*.tmp"))  # what the killed writers left: never under a checkpoint's name
    complete = list(folder.glob("*.ckpt"))
    assert complete and all(read_manifest(path) is not None for path in complete)

    resumed = run_cli("chainrule-train", f"resume={run_dir}", "trainer.plugins.0.write_delay_s=0", cwd=tmp_path,
                      env=ONE_THREAD, merge_stderr=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    resumed_from = re.search(r"resuming from (\S+)", resumed.stdout)
    assert resumed_from and Path(resumed_from.group(1)) in complete  # a checkpoint the killed run completed
    assert 0 < whole(Path(resumed_from.group(1)))["global_step"] < SHARDED_RUN_STEPS
    assert not list(folder.glob(".*.tmp")), "the resumed run removes what the killed writers left"
    assert_same_state(folder / "last.ckpt", reference / "checkpoints" / "last.ckpt")


def rank_environments(world: int, per_node: int) -> list[dict[str, str]]:
    """What a launcher exports to each rank (chainrule.launch.detect: the `env` launcher)."""
    port = str(free_port())
    return [{"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank % per_node),
             "NODE_RANK": str(rank // per_node), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
            for rank in range(world)]


@pytest.mark.parametrize("ranks", [1, 4])
def test_a_checkpoint_of_two_ranks_resumes_on_other_numbers_of_ranks_with_the_saved_state(
        tmp_path: Path, reference: Path, ranks: int) -> None:
    """The copy of the reference run keeps only its step-6 checkpoint; resumed on `ranks` ranks, held
    before its first batch and stopped by SIGTERM, it writes interrupted.ckpt from that many ranks at step
    6, before any update: the same parameters, optimizer state and schedule as saved, bit for bit."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    for path in (run_dir / "checkpoints").iterdir():
        if path.name != SAVED:
            remove(path)
    (run_dir / "finished.json").unlink()
    marker = tmp_path / "paused"
    args = [f"resume={run_dir}", *pause_at(6, "train_start", marker, seconds=120)]
    if ranks == 1:  # chainrule-train on one device
        processes = [launch(run_dir, *args, "trainer.devices=1")]
    else:  # 4 ranks as 2 "nodes" of 2 (this machine has 2 cores), started as a launcher would
        processes = [launch(run_dir, *args, "trainer.devices=2", "trainer.num_nodes=2", env=env)
                     for env in rank_environments(4, per_node=2)]
    wait_until(marker.exists, processes[0], run_dir)
    processes[0].send_signal(signal.SIGTERM)  # rank 0 only: the others learn of it from the ranks' agreement
    codes = [process.wait(timeout=240) for process in processes]
    assert codes == [128 + signal.SIGTERM] * ranks, log_of(run_dir)[-3000:]

    interrupted = run_dir / "checkpoints" / "interrupted.ckpt"
    assert read_manifest(interrupted)["world_size"] == ranks
    assert read_manifest(reference / "checkpoints" / SAVED)["world_size"] == 2
    assert_same_state(interrupted, reference / "checkpoints" / SAVED)
