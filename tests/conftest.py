"""Fixtures used by tests in several folders. Shared helpers that are not fixtures live in tests/support/."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from tests.support.configs import compose_config
from tests.support.paths import REPO


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose `train.yaml` with overrides, as chainrule-train would, writing into tmp_path."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        cfg = compose_config(*overrides, config_name=config_name)
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
