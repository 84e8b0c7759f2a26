"""Fixtures shared by all tests: composing the real config tree and running the real CLI."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from chainrule.config.groups import config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = config_dir()
BIN = Path(sys.executable).parent


def conf_options(group: str) -> list[str]:
    """Every option of a config group: parametrizing over this tests new files automatically."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


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


def run_cli(command: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a chainrule console script in a subprocess; returns the completed process (never raises)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([str(BIN / command), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
