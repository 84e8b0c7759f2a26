"""Fine-tuning: `init_from=` loads a checkpoint's model weights only (strict, or the keys that fit), and a
new head on a frozen backbone trains while the backbone stays exactly as loaded."""

import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from chainrule.checkpointing.discovery import checkpoint_to_use
from chainrule.cli.train import train
from chainrule.config import builders
from chainrule.core.errors import CheckpointError, ConfigError
from chainrule.models.mlp import MLP
from chainrule.training.init_from import load_weights
from tests.support.checkpoints import read_checkpoint
from tests.support.metrics import read_metric
from tests.support.presets import QUIET_CONSOLE


def mlp(classes: int, width: int = 16) -> MLP:
    return MLP((1, 8, 8), classes, depth=1, width=width, activation="relu", dropout=0.0, norm="none",
               residual=False)


def checkpoint_of(model: torch.nn.Module, path: Path) -> Path:
    """A file laid out as chainrule's checkpoints are: the Task's state_dict, the model under `model.`."""
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_strict_loading_refuses_a_head_of_another_shape_and_loads_nothing(tmp_path: Path) -> None:
    source, target = mlp(10), mlp(4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as refused:
        load_weights(target, checkpoint_of(source, tmp_path / "a.ckpt"), strict=True)
    message = str(refused.value)
    assert "2 shape-mismatched (head.weight [10, 16] -> [4, 16], head.bias [10] -> [4])" in message
    assert "init_from_strict=false" in message and "\n" not in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_loose_loading_loads_what_fits_and_reports_every_kind_of_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source, target = mlp(10), mlp(4)
    source.extra = torch.nn.Linear(2, 2)  # unexpected in the target
    head_before = target.head.weight.clone()
    with caplog.at_level(logging.INFO, logger="chainrule"):
        report = load_weights(target, checkpoint_of(source, tmp_path / "a.ckpt"), strict=False)
    assert report.matched == ["blocks.0.linear.weight", "blocks.0.linear.bias"]
    assert set(report.mismatched) == {"head.weight", "head.bias"}
    assert report.unexpected == ["extra.weight", "extra.bias"] and report.missing == []
    assert torch.equal(target.blocks[0].linear.weight, source.blocks[0].linear.weight)
    assert torch.equal(target.head.weight, head_before)
    for text in ("matched (loaded)", "missing (kept as initialized)", "unexpected (ignored)",
                 "shape-mismatched (kept as initialized)", "head.weight [10, 16] -> [4, 16]", "extra.weight"):
        assert text in caplog.text


def test_missing_keys_are_refused_when_strict(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"2 missing \(blocks.1.linear.weight, blocks.1.linear.bias\)"):
        load_weights(MLP((1, 8, 8), 10, 2, 16, "relu", 0.0, "none", False),
                     checkpoint_of(mlp(10), tmp_path / "a.ckpt"), strict=True)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_new_head_on_a_frozen_backbone_trains_and_the_backbone_stays_as_loaded(quick_run, compose_train,
                                                                                  tmp_path: Path) -> None:
    digits = quick_run()  # an MLP trained on digits: 10 classes of 8x8 images
    cfg = compose_train(f"init_from={digits}", "init_from_strict=false",
                        "data=synthetic",  # 4 classes of 1x8x8 images: a new head
                        "task.freeze=[blocks]", "trainer.max_epochs=3", "logger=csv", *QUIET_CONSOLE)
    L.seed_everything(cfg.seed, workers=True)  # what train() draws the new head from
    fresh_head = builders.build_task(cfg, builders.build_datamodule(cfg)).model.head.state_dict()
    train(cfg)

    loaded = read_checkpoint(checkpoint_to_use(digits, tmp_path))["state_dict"]  # what init_from= loaded
    final = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    backbone = [k for k in final["state_dict"] if k.startswith("model.blocks.")]
    assert backbone and all(torch.equal(final["state_dict"][k], loaded[k]) for k in backbone)
    assert final["state_dict"]["model.head.weight"].shape == (4, fresh_head["weight"].shape[1])
    assert not torch.equal(final["state_dict"]["model.head.weight"], fresh_head["weight"])
    # The optimizer holds state for the head's weight and bias only: the backbone has no gradient.
    moments = [s["exp_avg"] for s in final["optimizer_states"][0]["state"].values()]
    assert len(moments) == 2 and all(m.abs().sum() > 0 for m in moments)
    losses = read_metric(tmp_path, "train/loss_epoch")
    assert losses[-1] < losses[0]


def test_init_from_with_ckpt_path_is_refused(compose_train) -> None:
    from chainrule.training.init_from import initialize_from

    cfg = compose_train("init_from=a.ckpt", "ckpt_path=b.ckpt")
    with pytest.raises(ConfigError, match="pass one of them"):
        initialize_from(cfg, mlp(10))
