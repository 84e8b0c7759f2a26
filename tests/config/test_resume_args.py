"""`resume=<run dir>` becomes the run's own overrides, the new ones (which win), and its run directory."""

import os
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from chainrule.config.resume_args import resume_arguments
from chainrule.core.errors import ChainruleError


def run_dir_with(tmp_path: Path, overrides: list[str]) -> Path:
    (tmp_path / ".hydra").mkdir(parents=True)
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return tmp_path


def no_runs_dir() -> Path:
    raise AssertionError("only resume=latest looks for the runs directory")


def test_saved_overrides_come_first_and_given_ones_win(tmp_path: Path) -> None:
    run_dir = run_dir_with(
        tmp_path,
        ["data=synthetic", "trainer.max_epochs=4", "~callbacks.progress", "trainer.plugins.0.write_delay_s=4"],
    )
    argv = ["--cfg", "job", f"resume={run_dir}", "trainer.max_epochs=8", "trainer.plugins.0.write_delay_s=0"]
    assert resume_arguments(argv, no_runs_dir) == [
        "--cfg",
        "job",
        "data=synthetic",
        "~callbacks.progress",
        f"resume='{run_dir}'",
        f"hydra.run.dir='{run_dir}'",
        "trainer.max_epochs=8",
        "trainer.plugins.0.write_delay_s=0",
    ]


def test_expanding_again_adds_nothing(tmp_path: Path) -> None:
    """Lightning starts rank 1 with rank 0's expanded command line, after the run recorded its overrides."""
    run_dir = run_dir_with(tmp_path, ["data=synthetic", "~callbacks.progress"])
    first = resume_arguments([f"resume={run_dir}"], no_runs_dir)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([a for a in first if not a.startswith(("hydra.", "resume="))])
    )
    assert resume_arguments(first, no_runs_dir) == first


def test_other_command_lines_are_unchanged() -> None:
    assert resume_arguments(["data=digits", "resume=null"], no_runs_dir) == ["data=digits", "resume=null"]


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p], ids=["missing", "not-a-run"])
def test_a_directory_that_is_not_a_run_is_refused(tmp_path: Path, make) -> None:
    with pytest.raises(ChainruleError, match="resume="):
        resume_arguments([f"resume={make(tmp_path)}"], no_runs_dir)


def test_a_resume_that_changes_the_run_is_refused_before_anything_runs(tmp_path: Path) -> None:
    run_dir = run_dir_with(tmp_path, ["model.width=64"])
    with pytest.raises(ChainruleError, match=r"changes model.width: 64 -> 128; drop those overrides"):
        resume_arguments([f"resume={run_dir}", "model.width=128"], no_runs_dir)
    with pytest.raises(ChainruleError, match=r"changes optim.lr: \(default\) -> 0.1"):
        resume_arguments([f"resume={run_dir}", "optim.lr=0.1"], no_runs_dir)
    # How long to train and where are a continuation's to choose.
    resume_arguments([f"resume={run_dir}", "trainer.max_epochs=30", "trainer.devices=2"], no_runs_dir)


def test_latest_is_the_newest_run(tmp_path: Path) -> None:
    older = run_dir_with(tmp_path / "2026-01-01_00-00-00", ["seed=1"])
    newer = run_dir_with(tmp_path / "2026-01-02_00-00-00", ["seed=2"])
    os.utime(older / ".hydra" / "overrides.yaml", (1e9, 1e9))
    (tmp_path / "not-a-run").mkdir()
    assert f"hydra.run.dir='{newer}'" in resume_arguments(["resume=latest"], lambda: tmp_path)
    with pytest.raises(ChainruleError, match="holds no run yet"):
        resume_arguments(["resume=latest"], lambda: tmp_path / "empty")


@pytest.mark.parametrize("name", ["with space", "naïve-été", "it's", "a=b,c"])
def test_any_path_becomes_one_hydra_value(tmp_path: Path, name: str) -> None:
    run_dir = run_dir_with(tmp_path / name, ["seed=1"])
    argv = resume_arguments([f"resume={run_dir}"], no_runs_dir)
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(argv)}
    assert parsed["hydra.run.dir"] == str(run_dir) and parsed["resume"] == str(run_dir)
