"""How the W&B logger picks its mode, keeps its run id and prepares its config, without training."""

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from chainrule.core.errors import ConfigError
from chainrule.loggers.wandb import (
    choose_mode,
    credentials_source,
    flatten,
    run_id_path,
    server_reachable,
    stored_or_new_run_id,
)
from tests.loggers.conftest import isolated_env
from tests.support.processes import cli_env


def never_probed() -> bool:
    raise AssertionError("the server must not be probed here")


def write_netrc(home: Path, host: str) -> Path:
    path = home / ".netrc"
    path.write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def test_no_key_and_no_netrc_means_offline_without_probing_the_server(home: Path) -> None:
    mode, reason = choose_mode("auto", {"HOME": str(home)}, never_probed)
    assert mode == "offline"
    assert "WANDB_API_KEY" in reason and "api.wandb.ai" in reason


@pytest.mark.parametrize("reachable", [True, False])
def test_api_key_means_online_only_when_the_server_answers(home: Path, reachable: bool) -> None:
    mode, reason = choose_mode("auto", {"HOME": str(home), "WANDB_API_KEY": "x" * 40}, lambda: reachable)
    assert mode == ("online" if reachable else "offline")
    assert ("WANDB_API_KEY" if reachable else "not reachable") in reason


def test_netrc_entry_for_the_wandb_host_counts_as_credentials(home: Path) -> None:
    path = write_netrc(home, "api.wandb.ai")
    assert credentials_source({"HOME": str(home)}) == str(path)
    assert choose_mode("auto", {"HOME": str(home)}, lambda: True)[0] == "online"


def test_netrc_entry_for_another_host_is_not_credentials(home: Path) -> None:
    write_netrc(home, "example.org")
    assert credentials_source({"HOME": str(home)}) is None
    # ...unless W&B is pointed at that host (a self-hosted server).
    assert credentials_source({"HOME": str(home), "WANDB_BASE_URL": "https://example.org"}) is not None


def test_netrc_variable_names_the_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    path = write_netrc(elsewhere, "api.wandb.ai")
    assert credentials_source({"HOME": str(tmp_path), "NETRC": str(path)}) == str(path)


def test_wandb_mode_variable_wins_over_credentials(home: Path) -> None:
    env = {"HOME": str(home), "WANDB_API_KEY": "x" * 40, "WANDB_MODE": "offline"}
    assert choose_mode("auto", env, never_probed) == ("offline", "WANDB_MODE=offline")


@pytest.mark.parametrize("requested", ["offline", "disabled"])
def test_an_explicit_mode_is_used_as_given(home: Path, requested: str) -> None:
    env = {"HOME": str(home), "WANDB_API_KEY": "x" * 40, "WANDB_MODE": "online"}
    assert choose_mode(requested, env, never_probed)[0] == requested


@pytest.mark.parametrize("env_mode", [None, "online"])
def test_online_without_credentials_is_an_error_never_a_prompt(home: Path, env_mode: str | None) -> None:
    env = {"HOME": str(home), **({"WANDB_MODE": env_mode} if env_mode else {})}
    with pytest.raises(ConfigError, match="WANDB_API_KEY.*logger.wandb.mode=offline"):
        choose_mode("online" if env_mode is None else "auto", env, never_probed)


def test_unknown_mode_lists_the_valid_ones(home: Path) -> None:
    with pytest.raises(ConfigError, match="auto, disabled, offline, online"):
        choose_mode("onlin", {"HOME": str(home)}, never_probed)


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_server_reachable_opens_a_real_connection(listening_port: int) -> None:
    assert server_reachable(f"http://127.0.0.1:{listening_port}")


def test_server_reachable_is_false_for_a_closed_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # bound but not listening: connections are refused
        assert not server_reachable(f"http://127.0.0.1:{closed}", timeout_s=1.0)


def test_run_id_is_stored_once_and_reused(tmp_path: Path) -> None:
    first, resumed = stored_or_new_run_id(tmp_path, {})
    assert not resumed and len(first) == 8 and first.isalnum()
    assert run_id_path(tmp_path).read_text().strip() == first
    again, resumed = stored_or_new_run_id(tmp_path, {"WANDB_RUN_ID": "other"})
    assert (again, resumed) == (first, True)


def test_a_new_run_takes_the_sweep_agents_run_id(tmp_path: Path) -> None:
    assert stored_or_new_run_id(tmp_path, {"WANDB_RUN_ID": "agent123"}) == ("agent123", False)


def test_new_run_ids_do_not_move_the_seeded_random_generators(tmp_path: Path) -> None:
    import random

    random.seed(0)
    torch.manual_seed(0)
    stored_or_new_run_id(tmp_path, {})
    assert random.random() == random.Random(0).random()
    assert torch.rand(1).item() == torch.rand(1, generator=torch.Generator().manual_seed(0)).item()


def test_config_is_flattened_to_override_keys() -> None:
    nested = {"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "trainer": {"max_epochs": 2}, "tags": ["a"],
              "callbacks": {}, "ckpt_path": None}
    assert flatten(nested) == {"optim.lr": 0.1, "optim.betas": [0.9, 0.99], "trainer.max_epochs": 2,
                               "tags": ["a"], "callbacks": {}, "ckpt_path": None}


STARTS_A_RUN = """
import sys
from chainrule.loggers.wandb import WandbLogger

logger = WandbLogger(save_dir=sys.argv[1], project="p", name="n", mode="offline", watch=None, watch_log_freq=1,
                     flush_interval_s=1.0, tags=None, group=None, entity=None)
logger.experiment.log({"x": 1.0})
logger.experiment.finish()
print("wandb.sdk.launch imported:", "wandb.sdk.launch" in sys.modules)
"""


def test_a_run_starts_without_importing_wandb_launch_when_no_launch_inputs_are_staged(tmp_path: Path) -> None:
    env = cli_env(**isolated_env(tmp_path))
    result = subprocess.run([sys.executable, "-c", STARTS_A_RUN, str(tmp_path / "run")], env=env, text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wandb.sdk.launch imported: False" in result.stdout
    assert list((tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb"))  # the run itself was written
