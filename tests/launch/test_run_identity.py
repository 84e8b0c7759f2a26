"""Launch detection and run identity, without starting processes: who started a process, which run
directory its ranks agree on, what ranks other than 0 leave unwritten, and the world size a config asks
for before anything starts."""

import io
from pathlib import Path

import pytest

from chainrule.core.errors import ConfigError
from chainrule.launch.console import RankPrefixedStream
from chainrule.launch.detect import Launch, detect_launch
from chainrule.launch.devices import devices_per_node, world_size
from chainrule.launch.run_id import check_run_identity, new_run_dir, pinned_run_id, rank_overrides
from tests.support.configs import compose_config


@pytest.mark.parametrize("env, expected", [
    ({}, Launch("none")),
    ({"TORCHELASTIC_RUN_ID": "abc", "RANK": "3", "WORLD_SIZE": "4"}, Launch("torchrun", 3, 4)),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_JOB_NAME": "train"}, Launch("slurm", 1, 2)),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_JOB_NAME": "interactive"}, Launch("none")),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, Launch("env", 1, 2)),
    # torchrun inside a SLURM allocation: torchrun started the ranks, as Lightning also decides.
    ({"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "WORLD_SIZE": "2", "SLURM_NTASKS": "1"},
     Launch("torchrun", 0, 2)),
])
def test_the_launcher_is_read_from_the_environment(env: dict, expected: Launch) -> None:
    assert detect_launch(env) == expected


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"TORCHELASTIC_RUN_ID": "none"}, None),  # torchrun's default when --rdzv-id is not given
    ({"TORCHELASTIC_RUN_ID": "job7"}, "torchrun-job7"),
    ({"SLURM_JOB_ID": "123", "SLURM_JOB_NAME": "train"}, "slurm-123"),
    ({"SLURM_JOB_ID": "125", "SLURM_ARRAY_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "2"}, "slurm-123_2"),
    ({"SLURM_JOB_ID": "123", "TORCHELASTIC_RUN_ID": "job7", "CHAINRULE_RUN_ID": "mine"}, "mine"),
])
def test_the_run_id_comes_from_the_launchers_job_id(env: dict, expected: str | None) -> None:
    assert pinned_run_id(env) == expected


def test_without_a_job_id_each_run_gets_a_new_directory_named_by_time(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    for name in ("CHAINRULE_RUN_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    first, second = new_run_dir(str(tmp_path), "%Y"), new_run_dir(str(tmp_path), "%Y")
    assert Path(first).name.isdigit() and Path(second).name == f"{Path(first).name}-2"
    assert Path(first).is_dir() and Path(second).is_dir()  # claimed: a third run cannot take either
    monkeypatch.setenv("CHAINRULE_RUN_ID", "pinned")
    assert new_run_dir(str(tmp_path), "%Y") == str(tmp_path / "pinned")  # shared by ranks and restarts


def test_separately_started_ranks_need_a_common_run_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHAINRULE_RUN_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    torchrun = Launch("torchrun", 0, 2)
    with pytest.raises(ConfigError, match="--rdzv-id=<unique id>.*CHAINRULE_RUN_ID.*hydra.run.dir=<path>"):
        check_run_identity(["trainer=ddp_cpu"], torchrun)
    check_run_identity(["hydra.run.dir=/runs/a"], torchrun)
    with pytest.raises(ConfigError, match="hydra.sweep.dir"):
        check_run_identity(["-m", "hydra.run.dir=/runs/a"], torchrun)
    check_run_identity(["trainer=ddp_cpu"], Launch("none"))  # rank 0 hands its config to the others
    monkeypatch.setenv("CHAINRULE_RUN_ID", "pinned")
    check_run_identity(["trainer=ddp_cpu"], torchrun)


def test_ranks_other_than_0_write_no_hydra_config_and_no_log_file() -> None:
    assert rank_overrides(Launch("torchrun", 0, 2)) == []
    assert rank_overrides(Launch("none")) == []
    rank_0 = compose_config(return_hydra_config=True)
    rank_1 = compose_config(*rank_overrides(Launch("slurm", 1, 2)), return_hydra_config=True)
    assert "file" in rank_0.hydra.job_logging.handlers
    assert "file" not in rank_1.hydra.job_logging.handlers
    assert rank_1.hydra.job_logging.root.handlers == ["console"]


@pytest.mark.parametrize("trainer, per_node, world", [
    ({"devices": 2, "num_nodes": 3}, 2, 6),
    ({"devices": [0, 2], "num_nodes": 1}, 2, 2),
    ({"devices": "0,1,3"}, 3, 3),
    ({"devices": "4"}, 4, 4),
    ({"devices": "auto", "accelerator": "cpu"}, 1, 1),
])
def test_the_world_size_is_known_before_any_process_starts(trainer: dict, per_node: int, world: int) -> None:
    assert devices_per_node(trainer) == per_node
    assert world_size(trainer) == world


def test_prefixed_stream_marks_every_line_once() -> None:
    sink = io.StringIO()
    stream = RankPrefixedStream(sink, "[rank 1] ")
    stream.write("a")
    stream.write("b\nc\n")
    stream.write("\n")
    assert sink.getvalue() == "[rank 1] ab\n[rank 1] c\n[rank 1] \n"


def test_a_launcher_world_that_differs_from_the_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from chainrule.launch.local_ranks import on_all_ranks

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    cfg = OmegaConf.create({"trainer": {"devices": 2, "num_nodes": 1, "accelerator": "cpu"}})
    message = r"slurm started 1 processes, but trainer.devices=2 x trainer.num_nodes=1 = 2.*ntasks-per-node=2"
    with pytest.raises(ConfigError, match=message):
        on_all_ranks(lambda cfg: pytest.fail("ran despite the mismatch"), cfg)
