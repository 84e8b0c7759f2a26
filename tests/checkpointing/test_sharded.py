"""Sharded checkpoints (trainer=fsdp) as folders: complete or not there at all, found and checked like files
by the one discovery rule, read safely, and consolidated into one ordinary checkpoint. Written here in one
process through the same function the ranks of a run call (chainrule.checkpointing.dcp.save_sharded);
tests/training/test_sharded_resume.py writes them from several ranks."""

import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from chainrule.checkpointing.dcp import consolidate, save_sharded
from chainrule.checkpointing.discovery import (
    checkpoint_candidates,
    checkpoint_to_use,
    newest_intact_checkpoint,
    remove_stale_temporaries,
)
from chainrule.checkpointing.io import AtomicCheckpointIO, is_intact, load_checkpoint, load_run_config
from chainrule.checkpointing.sharded import MANIFEST, META, commit, is_sharded, link_folder, temporary_name
from chainrule.core.errors import CheckpointError
from tests.support.checkpoints import Payload


def write(path: Path, value: float = 1.0, **state) -> Path:
    """A sharded checkpoint of one process: a tensor, and a config in its meta.pt."""
    save_sharded(path, {"state_dict": {"w": torch.full((4, 3), value)}, **state},
                 {"global_step": int(value), "chainrule_config": {"seed": 7}}, write_delay_s=0.0)
    return path


def test_a_sharded_checkpoint_is_a_complete_folder_and_counts_as_intact(tmp_path: Path) -> None:
    path = write(tmp_path / "last.ckpt")
    assert is_sharded(path) and is_intact(path)
    assert {META, MANIFEST, ".metadata"} <= {p.name for p in path.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary folder is gone


@pytest.mark.parametrize("damage", ["truncated shard", "missing manifest", "missing meta", "truncated meta"])
def test_a_damaged_folder_is_not_intact(tmp_path: Path, damage: str) -> None:
    path = write(tmp_path / "last.ckpt")
    shard = next(path.glob("*.distcp"))
    if damage == "truncated shard":
        os.truncate(shard, shard.stat().st_size // 2)
    elif damage == "missing manifest":
        (path / MANIFEST).unlink()
    elif damage == "missing meta":
        (path / META).unlink()
    else:
        os.truncate(path / META, (path / META).stat().st_size - 10)
    assert not is_intact(path)


def test_discovery_skips_a_damaged_newest_folder_for_the_previous_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    older = folder / "step000002.ckpt"
    older.parent.mkdir()
    AtomicCheckpointIO(write_delay_s=0.0, in_background=False).save_checkpoint({"global_step": 2}, older)  # a file
    time.sleep(0.01)
    newest = write(folder / "last.ckpt", value=4.0)
    assert checkpoint_candidates(tmp_path) == [newest, older]
    assert newest_intact_checkpoint(tmp_path) == newest
    (newest / MANIFEST).unlink()
    assert newest_intact_checkpoint(tmp_path) == older


def test_ckpt_path_takes_a_sharded_folder_as_a_checkpoint_not_a_run_directory(tmp_path: Path) -> None:
    path = write(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint_to_use(path, tmp_path) == path
    assert checkpoint_to_use(tmp_path / "run", tmp_path) == path  # a run directory: its newest
    assert load_run_config(path) == {"seed": 7}


def test_loading_a_folder_as_one_file_says_how_to_read_it(tmp_path: Path) -> None:
    path = write(tmp_path / "last.ckpt")
    expected = r"sharded checkpoint .*trainer=fsdp.*chainrule-consolidate ckpt_path="
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_rewriting_a_name_replaces_the_folder_whole(tmp_path: Path) -> None:
    path = write(tmp_path / "last.ckpt", value=1.0)
    write(path, value=2.0)
    assert is_intact(path)
    assert torch.equal(consolidate(path)["state_dict"]["w"], torch.full((4, 3), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_commit_replaces_a_file_of_the_same_name_too(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"an older checkpoint file")
    source = write(tmp_path / "elsewhere.ckpt")
    temporary = temporary_name(target, os.getpid())
    source.rename(temporary)
    commit(temporary, target)
    assert is_intact(target) and not temporary.exists()


def test_a_second_name_shares_the_files_and_the_time(tmp_path: Path) -> None:
    source = write(tmp_path / "last.ckpt")
    link_folder(source, tmp_path / "step000004.ckpt")
    linked = tmp_path / "step000004.ckpt"
    assert is_intact(linked)
    assert all((linked / p.name).samefile(p) for p in source.iterdir())
    assert linked.stat().st_mtime_ns == source.stat().st_mtime_ns


def test_a_writer_killed_mid_write_leaves_only_a_temporary_folder_that_is_cleaned_up(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    kept = write(run_dir / "checkpoints" / "step000002.ckpt")
    stale = temporary_name(run_dir / "checkpoints" / "last.ckpt", 12345)
    write(stale)  # as complete as a folder gets before its rename: still not a checkpoint
    assert checkpoint_candidates(run_dir) == [kept]
    remove_stale_temporaries(run_dir)
    assert not stale.exists() and kept.exists()


def test_consolidation_gives_whole_tensors_and_the_optimizer_state_by_index(tmp_path: Path) -> None:
    """The optimizer state as torch.distributed.checkpoint.state_dict keys it (by parameter name) comes
    back keyed as Optimizer.state_dict() keys it, so a new optimizer over the same groups loads it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW([{"params": [model[0].weight, model[2].weight]},
                                   {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}])
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "last.ckpt"
    save_sharded(path, {"state_dict": get_model_state_dict(model),
                        "optimizer_0": get_optimizer_state_dict(model, optimizer)}, {"global_step": 1}, 0.0)

    whole = consolidate(path)
    assert whole["global_step"] == 1
    for name, value in model.state_dict().items():
        assert torch.equal(whole["state_dict"][name], value), name
    fresh = torch.optim.AdamW([{"params": [model[0].weight, model[2].weight]},
                               {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}])
    fresh.load_state_dict(whole["optimizer_states"][0])
    expected = optimizer.state_dict()
    assert fresh.state_dict()["param_groups"] == expected["param_groups"]
    for index, state in expected["state"].items():
        for key, value in state.items():
            assert torch.equal(fresh.state_dict()["state"][index][key], value), (index, key)


def test_reading_refuses_code_in_an_entry(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = write(tmp_path / "evil.ckpt", evil={"x": Payload(marker)})
    with pytest.raises(CheckpointError, match=r"refusing to load .*posix.system"):
        consolidate(path)
    assert not marker.exists()


def test_reading_refuses_code_in_the_index(tmp_path: Path) -> None:
    """DCP's own reader unpickles its index (.metadata) with pickle.load; chainrule's allows its types only."""
    marker = tmp_path / "payload-ran"
    path = write(tmp_path / "evil.ckpt")
    (path / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match=r"refusing to load .*posix.system"):
        consolidate(path)
    assert not marker.exists()
