"""`init_from=latest` is looked up once, when the command starts: every job of a multirun starts from the same
checkpoint, and the run's record names it."""

import shutil
from pathlib import Path

import pytest
import yaml

from chainrule.checkpointing.discovery import checkpoint_to_use
from chainrule.config.init_args import fixed_overrides, init_from_arguments
from tests.support.presets import QUIET_CONSOLE
from tests.support.processes import ONE_THREAD, run_cli


def test_only_latest_is_expanded_and_the_log_dir_is_asked_only_then(tmp_path: Path) -> None:
    def never() -> Path:
        raise AssertionError("the log directory was looked up")

    for argv in (["optim.lr=0.1"], ["init_from=/runs/a/last.ckpt"], ["init_from=null"]):
        assert init_from_arguments(argv, never) == argv


def test_a_multirun_composes_its_paths_from_the_fixed_overrides() -> None:
    assert fixed_overrides(["-m", "data.fold=range(0,5)", "paths.log_dir=/x", "optim.lr=1,2"]) == \
        ["paths.log_dir=/x"]


@pytest.mark.slow
def test_every_fold_starts_from_the_checkpoint_that_was_latest_at_the_start(quick_run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    trained = home / "logs" / "train" / "runs" / quick_run().name
    shutil.copytree(quick_run(), trained)  # a run of our own: the folds' runs do not change others' latest
    start = checkpoint_to_use("latest", home / "logs")
    result = run_cli("chainrule-train", "-m", "init_from=latest", "data.folds=2", "data.fold=range(0,2)",
                     "logger=csv", *QUIET_CONSOLE, cwd=home, env={"CHAINRULE_QUICK": "1", **ONE_THREAD})
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (home / "logs" / "train" / "multiruns").iterdir()
    for job in ("0", "1"):
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert f"init_from={start}" in [o.replace("'", "") for o in overrides]
    assert (sweep / "folds.csv").is_file()
