"""`tune=lr_find` and `tune=batch_size`: Lightning's finders run instead of training, and print the
override to use."""

import logging
import re
from pathlib import Path

import matplotlib.image
import pytest

from chainrule.cli.train import train
from tests.support.presets import QUIET_CONSOLE
from tests.support.processes import ONE_THREAD, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = ["logger=csv", *QUIET_CONSOLE, "model.width=32"]


def test_lr_find_writes_the_plot_and_suggests_a_rate_inside_the_range(compose_train, tmp_path: Path,
                                                                       caplog) -> None:
    low, high = 1e-5, 1.0
    cfg = compose_train(*QUIET, "tune=lr_find", "tune.num_training=40", f"tune.min_lr={low}",
                        f"tune.max_lr={high}")
    with caplog.at_level(logging.INFO, logger="chainrule"):
        result = train(cfg)
    out = caplog.text
    suggested = float(re.search(r"suggested learning rate: (\S+)", out).group(1))
    assert low <= suggested <= high
    assert f"optim.lr={suggested:.3g}" in out
    assert result["lr"] == pytest.approx(suggested, rel=1e-2)
    image = matplotlib.image.imread(tmp_path / "lr_find.png")
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a drawn figure, not blank
    assert not (tmp_path / "checkpoints").exists()  # tuning replaces training


def test_batch_size_finder_prints_the_largest_size_that_ran(compose_train, caplog) -> None:
    cfg = compose_train(*QUIET, "tune=batch_size", "tune.init_val=4", "tune.max_trials=3",
                        "tune.steps_per_trial=1")
    with caplog.at_level(logging.INFO, logger="chainrule"):
        result = train(cfg)
    out = caplog.text
    assert result["batch_size"] == 16  # 4 -> 8 -> 16: three trials, none ran out of memory on a CPU
    assert "data.batch_size=16" in out


@pytest.mark.slow
def test_lr_find_from_the_command_line(tmp_path: Path) -> None:
    run = run_cli("chainrule-train", "tune=lr_find", "tune.num_training=30", *QUIET,
                  f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, env=ONE_THREAD)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"use it with: optim\.lr=\S+", run.stdout)
    assert (tmp_path / "run" / "lr_find.png").stat().st_size > 0
