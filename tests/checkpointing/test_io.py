"""Checkpoints are loaded without running code, and written atomically, in the background by default."""

from pathlib import Path

import pytest
import torch

from chainrule.checkpointing.io import AtomicCheckpointIO, is_intact, load_checkpoint
from chainrule.core.errors import CheckpointError
from tests.support.checkpoints import malicious_checkpoint
from tests.support.processes import run_cli


def test_malicious_pickle_is_refused_by_default(tmp_path: Path) -> None:
    path, marker = malicious_checkpoint(tmp_path)
    for load in (load_checkpoint, AtomicCheckpointIO(write_delay_s=0.0, in_background=False).load_checkpoint):
        with pytest.raises(
            CheckpointError, match=r"refusing to load checkpoint .*evil\.ckpt.*\((posix|os|nt)\.system\)"
        ):
            load(path)
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_checkpoints_written_by_chainrule_load_safely(tmp_path: Path) -> None:
    io = AtomicCheckpointIO(write_delay_s=0.0, in_background=False)
    state = {
        "state_dict": {"w": torch.randn(3)},
        "loops": {"fit_loop": {"epoch": 1}},
        "chainrule_config": {"a": [1]},
    }
    io.save_checkpoint(state, tmp_path / "checkpoints" / "c.ckpt")
    loaded = io.load_checkpoint(tmp_path / "checkpoints" / "c.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["c.ckpt"]  # no temporary file left


def test_a_background_write_holds_the_state_of_its_save_and_what_follows_it_waits(tmp_path: Path) -> None:
    io = AtomicCheckpointIO(write_delay_s=1.0, in_background=True)  # each write takes a second at least
    weights = torch.arange(4.0)
    first, second = tmp_path / "first.ckpt", tmp_path / "second.ckpt"
    io.save_checkpoint({"state_dict": {"w": weights}, "global_step": 1}, first)
    weights.add_(100)  # the next optimizer step, while the first checkpoint is still being written
    assert not first.exists()  # the save returned before its write: training did not wait for it
    order: list[str] = []
    io.after_writes(lambda: order.append(f"linked {first.exists()}"))
    io.save_checkpoint({"state_dict": {"w": weights}, "global_step": 2}, second)
    assert io.load_checkpoint(first)["state_dict"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]  # waits for its write
    assert order == ["linked True"]  # after the write it followed, before the next one was read
    io.teardown()  # the end of fitting: every write is on disk
    assert is_intact(second) and torch.equal(load_checkpoint(second)["state_dict"]["w"], weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.ckpt", "second.ckpt"]


def test_a_failed_background_write_is_raised_to_whoever_waits_for_it(tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("not a folder")
    unwritable = tmp_path / "a file" / "c.ckpt"
    for raised_by in ("wait", "teardown"):  # a read of a checkpoint, the end of fitting
        io = AtomicCheckpointIO(write_delay_s=0.0, in_background=True)
        io.save_checkpoint({"global_step": 1}, unwritable)
        with pytest.raises(OSError):
            if raised_by == "wait":
                io.wait()
            else:
                io.teardown()
        io.save_checkpoint({"global_step": 2}, tmp_path / "ok.ckpt")  # the writer goes on
        io.teardown()
        assert load_checkpoint(tmp_path / "ok.ckpt")["global_step"] == 2


@pytest.mark.slow
def test_cli_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    path, marker = malicious_checkpoint(tmp_path)
    result = run_cli(
        "chainrule-eval", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path
    )
    assert result.returncode != 0
    assert "refusing to load checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
