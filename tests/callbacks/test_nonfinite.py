"""The non-finite guard: `raise` stops before the bad update and names it; `skip` drops and counts it."""

import logging
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from chainrule.callbacks.nonfinite import NonFiniteError, NonFiniteGuard
from chainrule.config import builders
from tests.support.interruptions import output, pause_at, start, wait_until
from tests.support.metrics import metric_steps

NAN_STEP = 7  # the optimizer step (0-based) whose forward pass first turns non-finite
POISON = ["model._target_=tests.callbacks.poisoned.PoisonedMLP", f"+model.nan_at_step={NAN_STEP}"]


class Recorder(L.Callback):
    """Keeps a copy of the parameters and optimizer state as they are after every completed step."""

    def __init__(self) -> None:
        self.after_step: dict[int, tuple[dict, dict]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        params = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        optimizer = trainer.optimizers[0].state_dict()
        state = {
            i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for i, s in optimizer["state"].items()
        }
        self.after_step[trainer.global_step] = (params, state)


@pytest.fixture
def build(compose_train, tmp_path: Path):
    """Data, task and trainer for the poisoned MLP on synthetic data (10 steps per epoch), with `guard`."""

    def _build(guard: NonFiniteGuard, *overrides: str, max_steps: int = 20):
        cfg = compose_train(
            "data=synthetic",
            "trainer=cpu",
            "logger=csv",
            "callbacks=none",
            "model.width=16",
            *POISON,
            *overrides,
        )
        datamodule = builders.build_datamodule(cfg)
        task = builders.build_task(cfg, datamodule)
        trainer = instantiate(
            cfg.trainer,
            callbacks=[guard, recorder],
            logger=builders.build_loggers(cfg),
            max_steps=max_steps,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        return datamodule, task, trainer

    recorder = Recorder()
    _build.recorder = recorder
    return _build


def test_raise_stops_before_the_update_of_the_bad_step(build) -> None:
    datamodule, task, trainer = build(NonFiniteGuard(policy="raise", max_consecutive_skips=1))
    with pytest.raises(NonFiniteError) as error:
        trainer.fit(task, datamodule=datamodule)
    message = str(error.value)
    assert f"non-finite loss at step {NAN_STEP} (epoch 0, batch {NAN_STEP})" in message
    assert "first non-finite layer: model.poison" in message
    assert trainer.global_step == NAN_STEP  # steps 0-6 were applied, step 7 was not

    params, optimizer_state = build.recorder.after_step[NAN_STEP]
    for name, value in task.model.state_dict().items():
        assert torch.equal(value, params[name]), name
    for i, state in trainer.optimizers[0].state_dict()["state"].items():
        assert int(state["step"]) == NAN_STEP
        assert torch.equal(state["exp_avg"], optimizer_state[i]["exp_avg"])
        assert torch.equal(state["exp_avg_sq"], optimizer_state[i]["exp_avg_sq"])


def logged(trainer, column: str) -> list[tuple[int, float]]:
    return metric_steps(Path(trainer.logger.log_dir) / "metrics.csv", column)


def test_skip_drops_bad_updates_counts_them_and_training_continues(build, caplog) -> None:
    guard = NonFiniteGuard(policy="skip", max_consecutive_skips=3)
    datamodule, task, trainer = build(guard, "+model.nan_steps=2", "trainer.log_every_n_steps=1")
    with caplog.at_level(logging.WARNING, logger="chainrule"):
        trainer.fit(task, datamodule=datamodule)
    assert re.search(f"non-finite loss at step {NAN_STEP} .*update skipped", caplog.text)
    assert trainer.global_step == 20  # it went on to the end
    assert guard.skipped == 2 and guard.consecutive == 0
    for name, value in task.model.state_dict().items():
        assert torch.isfinite(value).all(), name
    # The skipped steps changed nothing: the parameters after step 8 are those after step 6.
    after_6, _ = build.recorder.after_step[NAN_STEP]
    after_8, _ = build.recorder.after_step[NAN_STEP + 2]
    for name in after_6:
        assert torch.equal(after_6[name], after_8[name]), name
    counts = dict(logged(trainer, "train/skipped_steps"))
    assert (
        counts[NAN_STEP - 1] == 0 and counts[NAN_STEP] == 1 and counts[NAN_STEP + 1] == 2 and counts[19] == 2
    )


def test_skip_stops_after_too_many_consecutive_bad_steps(build) -> None:
    datamodule, task, trainer = build(NonFiniteGuard(policy="skip", max_consecutive_skips=3))
    with pytest.raises(NonFiniteError, match=r"non-finite loss in 3 consecutive steps, the last at step 9"):
        trainer.fit(task, datamodule=datamodule)


@pytest.mark.slow
def test_cli_reports_the_step_and_layer_and_leaves_checkpoints_alone(tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    process = start(run_dir, *POISON, *pause_at(NAN_STEP, "train_batch_start", marker, seconds=2))
    wait_until(marker.exists, process, run_dir)
    folder = run_dir / "checkpoints"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert process.wait(timeout=120) == 2  # a chainrule error: one message, exit status 2
    text = output(run_dir)
    assert f"non-finite loss at step {NAN_STEP} (epoch 0, batch {NAN_STEP})" in text
    assert "first non-finite layer: model.poison" in text
    assert "Traceback" not in text
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert after == before and before  # the checkpoints written before step 7 are exactly as they were
