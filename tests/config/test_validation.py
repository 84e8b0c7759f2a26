"""The pre-flight config checks accept every shipped config option, and read constructors correctly."""

import pytest
import torch

from chainrule.config.groups import config_dir, config_groups
from chainrule.config.validation import accepted_parameters, validate

# Every group of the train config but those that only a submission (cluster) or a multirun
# (hparams_search: its pruner comes from the running sweeper) can compose.
GROUPS = [g for g in config_groups() if g not in ("cluster", "hparams_search")]


def options() -> list[tuple[str, str]]:
    return [(group, p.stem) for group in GROUPS for p in sorted((config_dir() / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), options(), ids=[f"{g}={o}" for g, o in options()])
def test_every_shipped_option_passes_validation(compose_train, group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    validate(cfg)


def test_parameters_follow_kwargs_up_the_class_hierarchy() -> None:
    from chainrule.data.sklearn import SklearnDataModule

    params, open_ended = accepted_parameters(SklearnDataModule)
    assert {"dataset", "batch_size", "val_fraction", "split_seed"} <= params.keys()
    assert params["batch_size"] is int and not open_ended
