"""data=streaming: LitData shards written by the test, streamed by LitData's loader for training and
read by index for evaluation."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from chainrule.core.errors import DataNotFoundError
from tests.support.configs import compose_config
from tests.support.data_files import SHARD_CLASSES, SHARD_FEATURES, write_shards
from tests.support.training import fit_bare

QUICK = ["trainer.max_steps=8", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "trainer.accelerator=cpu", "logger=none", "callbacks=none", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), {"train": 64, "val": 12})


def datamodule(input_dir: Path, *overrides: str):
    cfg = compose_config("data=streaming", f"data.input_dir={input_dir}", f"data.num_classes={SHARD_CLASSES}",
                         "data.batch_size=8", *overrides)
    return instantiate(cfg.data)


def test_an_epoch_streams_every_training_item_once_in_an_order_fixed_by_the_seed(shards: Path) -> None:
    def epoch(seed: int) -> list[int]:
        loader = datamodule(shards, "data.num_workers=2", f"seed={seed}").train_dataloader()
        return [int(i) for x, _ in loader for i in x[:, 0]]

    first = epoch(1)
    assert sorted(first) == list(range(64)) and first != list(range(64))
    assert epoch(1) == first and epoch(2) != first


def test_inputs_targets_and_splits_come_from_the_shards(shards: Path) -> None:
    dm = datamodule(shards)
    assert dm.input_shape == (1 + SHARD_FEATURES,) and dm.num_outputs == SHARD_CLASSES
    assert dm.split_sizes() == {"train": 64, "val": 12, "test": 0}  # test/ is optional
    x, y = next(iter(dm.val_dataloader()))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert [int(i) for x, _ in dm.val_dataloader() for i in x[:, 0]] == list(range(64, 76))
    assert list(dm.test_dataloader()) == []


def test_missing_shards_name_the_command_that_writes_them(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"no LitData shards at .*/train .*chainrule-prepare shards"):
        _ = datamodule(tmp_path).input_shape


@pytest.mark.usefixtures("one_torch_thread")
def test_a_model_trains_on_streamed_shards(shards: Path, compose_train) -> None:
    cfg = compose_train("data=streaming", f"data.input_dir={shards}", f"data.num_classes={SHARD_CLASSES}",
                        "data.batch_size=8", "data.num_workers=2", "model=mlp", *QUICK)
    fitted = fit_bare(cfg)
    assert fitted.trainer.global_step == 8 and fitted.parameters_changed
    assert torch.isfinite(fitted.trainer.callback_metrics["val/loss"])
