"""`debug=overfit_batch`: the digits MLP memorizes one batch, and the run says whether it did."""

import logging
from pathlib import Path

import pytest

from chainrule.cli.train import train
from tests.support.presets import QUIET_CONSOLE
from tests.support.processes import ONE_THREAD, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_digits_mlp_overfits_one_batch_and_says_so(tmp_path: Path) -> None:
    run = run_cli("chainrule-train", "experiment=digits_mlp", "debug=overfit_batch", *QUIET_CONSOLE,
                  f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, env=ONE_THREAD)
    assert run.returncode == 0, run.stderr[-2000:]
    output = run.stdout + run.stderr
    [line] = [line for line in output.splitlines() if "overfit check passed" in line]
    final = float(line.split(" to ")[1].split()[0])
    assert final < 1e-2


def test_a_model_that_cannot_fit_is_reported(compose_train, caplog) -> None:
    # A frozen learning rate cannot fit anything: the check must say so rather than pass.
    cfg = compose_train("debug=overfit_batch", *QUIET_CONSOLE, "logger=csv", "optim.lr=0.0",
                        "trainer.max_epochs=5", "callbacks.gradient_health=null")
    with caplog.at_level(logging.INFO, logger="chainrule.callbacks.overfit"):
        train(cfg)
    messages = [r.getMessage() for r in caplog.records if r.name == "chainrule.callbacks.overfit"]
    assert len(messages) == 1 and "overfit check FAILED" in messages[0]
