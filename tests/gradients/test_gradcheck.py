"""chainrule-gradcheck: autograd agrees with float64 central differences for every model in conf/model/,
and a layer with a wrong backward is caught and named."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from chainrule.cli.gradcheck import gradcheck
from chainrule.config import builders
from chainrule.models.mlp import MLP
from chainrule.training.gradcheck import GradientCheckError, check_gradients
from tests.gradients.buggy_models import BuggyMLP
from tests.support.paths import CONF, REPO, conf_options
from tests.support.processes import ONE_THREAD, run_cli

# Overrides that make a model small (and give it a task it fits); a new conf/model file is checked at its
# configured size until it gets an entry here.
SMALL: dict[str, list[str]] = {
    "mlp": ["model.width=16"],
    "cnn": ["model.channels=[4,8]", "model.hidden=16"],
    "autoencoder": ["model.channels=[4,8]", "model.latent_dim=4", "task=reconstruction", "loss=mse"],
    "gpt": ["data=tokens", "data.seq_len=8", "data.vocab_size=16", "model.n_layer=1", "model.n_embd=16",
            "model.n_head=2", "task=language_model", "loss=token_cross_entropy"],
    "gpt2_small": ["data=tokens", "data.seq_len=8", "data.vocab_size=16", "model.n_layer=1", "model.n_embd=24",
                   "task=language_model", "loss=token_cross_entropy"],
    # resnet18 cannot shrink; one sample and two elements per tensor keep its 62 tensors affordable.
    "torchvision": ["gradcheck.max_elements=2", "gradcheck.batch_size=1"],
}
SLOW = {"torchvision"}  # over ten seconds on a shared two-core machine


def default_check(**overrides) -> dict:
    """The gradcheck settings of conf/gradcheck.yaml (so the tests use the shipped defaults)."""
    settings = OmegaConf.load(CONF / "gradcheck.yaml").gradcheck
    return instantiate(settings, **overrides).keywords


@pytest.mark.parametrize(
    "model", [pytest.param(m, marks=[pytest.mark.slow] if m in SLOW else []) for m in conf_options("model")]
)
def test_every_configured_model_passes_in_float64(model: str, compose_train) -> None:
    cfg = compose_train(f"model={model}", *SMALL.get(model, []), config_name="gradcheck")
    report = gradcheck(cfg)
    assert report.passed, [row for row in report.failures]
    assert max(row.rel_error for row in report.rows) < 1e-6
    checked = {row.layer for row in report.rows}
    datamodule = builders.build_datamodule(cfg)
    network = builders.build_task(cfg, datamodule).model
    named = {name.rpartition(".")[0] for name, _ in network.named_parameters()}
    assert named <= checked, f"parameter tensors not checked: {named - checked}"
    # The input is checked where it has a gradient (images, features), not for token ids: read from the
    # data, so that a new integer-input data set needs no entry here.
    assert ("input" in checked) == datamodule.splits.train.x.is_floating_point()


def test_wrong_backward_is_caught_and_named() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    settings = default_check()
    good = check_gradients(MLP((1, 8, 8), 10, depth=2, width=16, activation="relu", dropout=0.0, norm="none", residual=False), nn.CrossEntropyLoss(), x, y, **settings)
    bad = check_gradients(BuggyMLP((1, 8, 8), 10, depth=2, width=16, activation="relu", dropout=0.0, norm="none", residual=False), nn.CrossEntropyLoss(), x, y, **settings)
    assert good.passed
    assert bad.failed_layers == [BuggyMLP.BUGGY_LAYER]
    [failure] = bad.failures
    assert failure.tensor == "weight"  # the function's input and bias gradients are right
    assert failure.rel_error > 0.1  # off by a factor of 2, not by rounding


def test_original_model_is_left_untouched() -> None:
    model = MLP((1, 8, 8), 10, depth=1, width=8, activation="relu", dropout=0.5, norm="none", residual=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_gradients(model, nn.CrossEntropyLoss(), torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)),
                    **default_check())
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def gradcheck_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`chainrule-gradcheck ARGS`, run as `python -m` so that it also works before the console script is
    (re)installed; the script entry itself is checked in test_console_script_is_declared."""
    return run_cli(sys.executable, "-m", "chainrule.cli.gradcheck", *args, cwd=cwd, env=ONE_THREAD)


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["chainrule-gradcheck"] == "chainrule.cli.gradcheck:cli"


@pytest.mark.slow
def test_cli_exits_non_zero_naming_the_faulty_layer(tmp_path: Path) -> None:
    small = ["model.width=16", "model.depth=2"]
    bad = gradcheck_cli("model._target_=tests.gradients.buggy_models.BuggyMLP", *small,
                        f"hydra.run.dir={tmp_path}/bad", cwd=tmp_path)
    assert bad.returncode != 0
    output = bad.stdout + bad.stderr
    assert "gradient check failed" in output and BuggyMLP.BUGGY_LAYER in output
    good = gradcheck_cli(*small, f"hydra.run.dir={tmp_path}/good", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "gradient check passed" in good.stdout


def test_failure_raises_a_user_error_naming_the_layer(compose_train) -> None:
    cfg = compose_train("model._target_=tests.gradients.buggy_models.BuggyMLP", "model.width=16",
                        config_name="gradcheck")
    with pytest.raises(GradientCheckError, match=BuggyMLP.BUGGY_LAYER.replace(".", r"\.")):
        gradcheck(cfg)
