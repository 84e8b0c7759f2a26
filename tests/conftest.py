"""Fixtures used by tests in several folders. Shared helpers that are not fixtures live in tests/support/."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from tests.support.paths import CONF, REPO


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose `train.yaml` with overrides, as chainrule-train would, writing into tmp_path."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides))
        with open_dict(cfg):
            # ${hydra:...} resolvers only exist inside a Hydra app; pin the paths they would give.
            cfg.paths.root_dir = str(REPO)
            cfg.paths.output_dir = str(tmp_path)
        return cfg

    return _compose


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread in the test process, as ONE_THREAD (tests.support.processes) gives a subprocess;
    modules that train in the test process ask for it with pytest.mark.usefixtures("one_torch_thread")."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
