"""The gradient scalars and alerts reach W&B too: read back from the offline run file."""

from pathlib import Path

import pytest

from tests.support.presets import NO_PROGRESS_BARS
from tests.support.processes import ONE_THREAD, run_cli
from tests.support.wandb_runs import history, offline_runs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_gradient_scalars_and_alert_in_the_wandb_run(tmp_path: Path) -> None:
    run = run_cli("chainrule-train", "logger=wandb", "model.width=32", "optim=sgd", "optim.lr=1000",
                  "scheduler=constant", "trainer.limit_train_batches=4", "trainer.max_epochs=1", "test=false",
                  "callbacks.nonfinite=null",  # an overflowing loss would stop the run before the last step
                  "callbacks.gradient_health.every_n_steps=1", *NO_PROGRESS_BARS,
                  f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
                  env={**ONE_THREAD, "WANDB_MODE": "offline"})
    assert run.returncode == 0, run.stderr[-2000:]
    [run] = offline_runs(tmp_path / "run")
    rows = [row for row in history(run) if "grad_norm/global_pre_clip" in row]
    assert [row["trainer/global_step"] for row in rows] == [0, 1, 2, 3]
    for name in ("grad_norm/blocks.0.linear", "grad_norm/global_post_clip", "param_norm/head",
                 "update_ratio/blocks.1.linear", "dead_relu/blocks.0.act"):
        assert name in rows[0]
    assert sum(row.get("alerts/exploding") == 1 for row in rows) == 1
