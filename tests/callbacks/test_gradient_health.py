"""The gradient health callback: the scalars it logs (names shared with the W&B plots), what they measure,
and its vanishing/exploding alerts, each read back from the CSV logger's metrics file."""

import logging
import math
from pathlib import Path

import pytest
import torch

from chainrule.cli.train import train
from chainrule.config import builders
from tests.support.metrics import read_metrics
from tests.support.presets import QUIET_CONSOLE
from tests.support.processes import ONE_THREAD, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = [
    "logger=csv", "test=false", "trainer.accelerator=cpu", *QUIET_CONSOLE,
    "callbacks.checkpoints=null", "callbacks.early_stopping=null", "trainer.limit_val_batches=1",
]
DEEP = ["model.depth=20", "model.width=32", "model.dropout=0.0", "trainer.max_epochs=1"]
HEALTH = "chainrule.callbacks.gradient_health"


def alert_steps(rows: list[dict[str, float]], condition: str) -> list[int]:
    return [int(row["step"]) for row in rows if row.get(f"alerts/{condition}") == 1.0]


def health_rows(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [row for row in rows if "grad_norm/global_pre_clip" in row]


def test_gradient_health_is_on_by_default(compose_train) -> None:
    cfg = compose_train()
    assert cfg.callbacks.gradient_health._target_ == f"{HEALTH}.GradientHealth"


def test_logs_per_layer_scalars_on_the_interval_only(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(*QUICK, "model.width=32", "trainer.max_epochs=2",
                        "callbacks.gradient_health.every_n_steps=10")
    train(cfg)
    rows = health_rows(read_metrics(tmp_path))
    assert [int(row["step"]) for row in rows] == [0, 10, 20, 30]  # digits: 20 steps per epoch
    layers = ["blocks.0.linear", "blocks.1.linear", "head"]  # the MLP's parameter-owning modules
    expected = {"grad_norm/global_pre_clip", "grad_norm/global_post_clip", "dead_relu/blocks.0.act",
                "dead_relu/blocks.1.act"}
    expected |= {f"{kind}/{layer}" for kind in ("grad_norm", "param_norm", "update_ratio", "grad_to_weight")
                 for layer in layers}
    for row in rows:
        assert expected <= row.keys(), expected - row.keys()
        assert all(math.isfinite(row[key]) and row[key] >= 0 for key in expected)
        assert 0 <= row["dead_relu/blocks.0.act"] <= 1
        # The global norm is the root of the summed squares of the per-layer norms.
        per_layer = math.sqrt(sum(row[f"grad_norm/{layer}"] ** 2 for layer in layers))
        assert row["grad_norm/global_pre_clip"] == pytest.approx(per_layer, rel=1e-5)
    assert not any(key.startswith("alerts/") for row in rows for key in row)  # a healthy run stays quiet


def test_global_norm_after_clipping_is_the_clipped_norm(compose_train, tmp_path: Path) -> None:
    clip = 0.05
    cfg = compose_train(*QUICK, "model.width=32", "trainer.limit_train_batches=6", "trainer.max_epochs=1",
                        f"trainer.gradient_clip_val={clip}", "callbacks.gradient_health.every_n_steps=1")
    train(cfg)
    rows = health_rows(read_metrics(tmp_path))
    assert len(rows) == 6
    for row in rows:
        pre, post = row["grad_norm/global_pre_clip"], row["grad_norm/global_post_clip"]
        assert pre > clip  # the test is meaningful: every step was clipped
        assert post == pytest.approx(clip, rel=1e-4)


def test_without_clipping_both_global_norms_agree(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(*QUICK, "model.width=32", "trainer.limit_train_batches=3", "trainer.max_epochs=1",
                        "callbacks.gradient_health.every_n_steps=1")
    train(cfg)
    for row in health_rows(read_metrics(tmp_path)):
        assert row["grad_norm/global_post_clip"] == pytest.approx(row["grad_norm/global_pre_clip"], rel=1e-6)


def test_update_ratio_is_the_step_plain_sgd_takes(compose_train, tmp_path: Path) -> None:
    """With plain SGD the update is lr x gradient, so ||update|| = lr x ||gradient|| for every layer."""
    lr = 0.1
    cfg = compose_train(*QUICK, "model.width=32", "optim=sgd", f"optim.lr={lr}", "optim.momentum=0.0",
                        "optim.nesterov=false", "optim.weight_decay=0.0", "scheduler=constant",
                        "trainer.limit_train_batches=4", "trainer.max_epochs=1",
                        "callbacks.gradient_health.every_n_steps=1")
    train(cfg)
    rows = health_rows(read_metrics(tmp_path))
    assert len(rows) == 4
    for row in rows:
        for layer in ("blocks.0.linear", "blocks.1.linear", "head"):
            update = row[f"update_ratio/{layer}"] * row[f"param_norm/{layer}"]
            assert update == pytest.approx(lr * row[f"grad_norm/{layer}"], rel=1e-3)
            assert row[f"grad_to_weight/{layer}"] == pytest.approx(
                row[f"grad_norm/{layer}"] / row[f"param_norm/{layer}"], rel=1e-6)


def test_dead_relu_fraction_counts_units_that_never_fire(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(*QUICK, "model.width=32", "model.dropout=0.0", "trainer.limit_train_batches=3",
                        "trainer.max_epochs=1", "callbacks.gradient_health.every_n_steps=1")
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    with torch.no_grad():  # silence half of the first layer's units for good: a dead unit gets no gradient
        task.model.blocks[0].linear.bias[:16] = -1e3
    trainer = builders.build_trainer(cfg, builders.build_callbacks(cfg), builders.build_loggers(cfg))
    trainer.fit(task, datamodule=datamodule)
    rows = health_rows(read_metrics(tmp_path))
    assert len(rows) == 3
    for row in rows:
        assert 0.5 <= row["dead_relu/blocks.0.act"] <= 0.5 + 2 / 32  # the 16 silenced units, maybe one more


def test_deep_sigmoid_mlp_triggers_the_vanishing_alert_once(compose_train, tmp_path: Path, caplog) -> None:
    cfg = compose_train(*QUICK, *DEEP, "model.activation=sigmoid",
                        "callbacks.gradient_health.every_n_steps=5")
    with caplog.at_level(logging.WARNING, logger=HEALTH):
        train(cfg)
    rows = read_metrics(tmp_path)
    assert len(health_rows(rows)) >= 2  # the condition persisted ...
    assert alert_steps(rows, "vanishing") == [0]  # ... and was reported once, in the first epoch
    [message] = [r.getMessage() for r in caplog.records if "vanishing gradients" in r.getMessage()]
    assert "blocks.0.linear" in message  # names the layers ...
    assert "residual" in message and "init" in message  # ... and the remedies


def test_relu_he_init_residual_mlp_does_not_trigger_vanishing(compose_train, tmp_path: Path, caplog) -> None:
    cfg = compose_train(*QUICK, *DEEP, "model.activation=relu", "task.init=kaiming_normal",
                        "model.residual=true", "callbacks.gradient_health.every_n_steps=5")
    with caplog.at_level(logging.WARNING, logger=HEALTH):
        train(cfg)
    rows = read_metrics(tmp_path)
    assert len(health_rows(rows)) >= 2
    assert alert_steps(rows, "vanishing") == []
    assert not any("vanishing" in r.getMessage() for r in caplog.records)
    # Unnormalized, each He-initialized residual branch doubles the activations' variance (2^20 over 20
    # blocks), so gradients are huge: reported as exploding, which they are. Normalization fixes that:
    # see test_relu_he_init_residual_layernorm_mlp_raises_no_alert.


def test_relu_he_init_residual_layernorm_mlp_raises_no_alert(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(*QUICK, *DEEP, "model.activation=relu", "task.init=kaiming_normal",
                        "model.residual=true", "model.norm=layer",
                        "callbacks.gradient_health.every_n_steps=5")
    train(cfg)
    rows = read_metrics(tmp_path)
    assert len(health_rows(rows)) >= 2
    assert not any(key.startswith("alerts/") for row in rows for key in row)


def test_absurd_learning_rate_triggers_the_exploding_alert(compose_train, tmp_path: Path, caplog) -> None:
    # Without the non-finite guard: should the loss overflow, the guard would stop the run (by design);
    # this test is about the alert that comes before.
    cfg = compose_train(*QUICK, "model.width=32", "optim=sgd", "optim.lr=1000", "scheduler=constant",
                        "trainer.limit_train_batches=5", "trainer.max_epochs=1", "callbacks.nonfinite=null",
                        "callbacks.gradient_health.every_n_steps=1")
    with caplog.at_level(logging.WARNING, logger=HEALTH):
        train(cfg)
    rows = read_metrics(tmp_path)
    steps = alert_steps(rows, "exploding")
    assert len(steps) == 1 and steps[0] <= 2
    # The explosion can kill every ReLU a step later, which is then (rightly) reported as vanishing.
    assert all(step > steps[0] for step in alert_steps(rows, "vanishing"))
    [message] = [r.getMessage() for r in caplog.records if "exploding gradients" in r.getMessage()]
    assert "optim.lr" in message and "gradient_clip_val" in message


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ddp_logs_one_set_of_scalars_from_rank_zero(tmp_path: Path) -> None:
    run = run_cli("chainrule-train", "+trainer.strategy=ddp", "trainer.devices=2", *QUICK, "model.width=32",
                  "trainer.max_epochs=1", "callbacks.gradient_health.every_n_steps=5",
                  f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, env=ONE_THREAD)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = health_rows(read_metrics(tmp_path / "run"))
    assert [int(row["step"]) for row in rows] == [0, 5, 10, 15]  # 20 steps of the global batch, no duplicates
