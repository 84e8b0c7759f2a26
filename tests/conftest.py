"""Fixtures used by tests in several folders. Shared helpers that are not fixtures live in tests/support/."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from tests.support.configs import compose_config
from tests.support.machine_share import (
    close_shared_dir,
    needs_whole_machine,
    open_shared_dir,
    share_of_the_machine,
    whole_machine_tests_last,
)
from tests.support.paths import REPO
from tests.support.processes import ONE_THREAD

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one math thread each (and in the processes they start), or OpenMP threads
    # spinning against each other make every step several times slower.
    os.environ.update(ONE_THREAD)
    torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    open_shared_dir(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    close_shared_dir()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    whole_machine_tests_last(items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Setup (session fixtures included), call and teardown of a test, with its share of the machine."""
    with share_of_the_machine(whole=needs_whole_machine(item)):
        yield


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


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`quick_run(*overrides)`: the run directory of a finished `CHAINRULE_QUICK=1 chainrule-train
    overrides...` (3 epochs of 2 batches, CSV logger), trained once per session for each set of overrides
    and shared by the tests that use a trained checkpoint (predict, export, fine-tuning). It lies in a
    user's directory of its own (`<home>/logs/train/runs/<time>`), where `latest` finds it."""
    from tests.support.presets import QUIET_CONSOLE
    from tests.support.processes import run_cli

    runs: dict[tuple[str, ...], Path] = {}

    def _run(*overrides: str) -> Path:
        if overrides not in runs:
            home = tmp_path_factory.mktemp("quick-run")
            result = run_cli("chainrule-train", *overrides, *QUIET_CONSOLE, "logger=csv", cwd=home,
                             env={"CHAINRULE_QUICK": "1", **ONE_THREAD})
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
            (runs[overrides],) = (home / "logs" / "train" / "runs").iterdir()
        return runs[overrides]

    return _run
