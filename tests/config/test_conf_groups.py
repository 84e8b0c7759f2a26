"""Every option in conf/{data,model,loss,optim,scheduler} composes, instantiates and takes optimizer steps.

The options are read from the folders, so a new YAML file is tested without touching this file.
Options that only make sense with a particular task get their partners from COMPANIONS.
"""

from pathlib import Path

import pytest
import torch

from tests.support.configs import conf_options
from tests.support.data_files import populate_files
from tests.support.fake_vision_data import populate
from tests.support.training import fit_bare

# Overrides an option needs to form a meaningful run (e.g. a regression loss needs regression data).
COMPANIONS: dict[tuple[str, str], list[str]] = {
    ("model", "autoencoder"): ["task=reconstruction", "loss=mse"],
    ("loss", "mse"): ["data=diabetes", "task=regression"],
    ("data", "diabetes"): ["task=regression", "loss=mse"],
    ("data", "tokens"): ["model=gpt", "task=language_model", "loss=token_cross_entropy"],
    ("data", "token_file"): ["model=gpt", "task=language_model", "loss=token_cross_entropy"],
    ("data", "image_folder"): ["data.image_size=16"],
    ("loss", "token_cross_entropy"): ["data=tokens", "model=gpt", "task=language_model"],
    ("model", "gpt"): ["data=tokens", "task=language_model", "loss=token_cross_entropy"],
    # GPT-2 small's width, one block deep: the full depth adds minutes and no new code path.
    ("model", "gpt2_small"): ["data=tokens", "task=language_model", "loss=token_cross_entropy", "model.n_layer=1"],
}
QUICK = [
    "trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "trainer.accelerator=cpu", "logger=none", "callbacks=none", "data.batch_size=16",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",  # the step loss is logged on logging steps only
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    populate(path)
    populate_files(path)  # image files, token files, LitData shards
    return path


@pytest.mark.parametrize(
    ("group", "option"),
    [(group, option) for group in ("data", "model", "loss", "optim", "scheduler") for option in conf_options(group)],
)
def test_option_trains(group: str, option: str, compose_train, data_dir: Path) -> None:
    cfg = compose_train(f"{group}={option}", *COMPANIONS.get((group, option), []), *QUICK,
                        f"paths.data_dir={data_dir}")
    fitted = fit_bare(cfg)
    trainer = fitted.trainer
    train_loss = trainer.callback_metrics["train/loss_step"]
    trainer.test(fitted.task, datamodule=fitted.datamodule)

    assert trainer.global_step == 3
    assert fitted.parameters_changed, "no parameter changed"
    assert torch.isfinite(train_loss)
    assert torch.isfinite(trainer.callback_metrics["test/loss"])
