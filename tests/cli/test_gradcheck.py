"""chainrule-gradcheck: autograd agrees with float64 central differences in every module of every model in
conf/model/, a module with a wrong backward fails the check, named, and a nonsensical setting is refused
before anything loads (the check itself: training/test_gradcheck.py)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chainrule.cli.gradcheck import gradcheck
from chainrule.config import builders
from chainrule.training.gradcheck import MODEL, GradientCheckError
from tests.support.buggy_models import BuggyActivationMLP, BuggyMLP
from tests.support.configs import conf_options
from tests.support.paths import REPO
from tests.support.processes import ONE_THREAD, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

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
    # resnet18 cannot shrink; one sample and two elements per tensor keep its 131 comparisons to a second
    # (twenty elements: five seconds on a shared two-core machine).
    "torchvision": ["gradcheck.max_elements=2", "gradcheck.batch_size=1"],
}


@pytest.mark.parametrize("model", conf_options("model"))
def test_every_configured_model_passes_in_float64(model: str, compose_train) -> None:
    cfg = compose_train(f"model={model}", *SMALL.get(model, []), config_name="gradcheck")
    report = gradcheck(cfg)
    assert report.passed, [row for row in report.failures]
    assert max(row.rel_error for row in report.rows) < 1e-6
    checked = {(row.module, row.compared) for row in report.rows}
    datamodule = builders.build_datamodule(cfg)
    network = builders.build_task(cfg, datamodule).model
    owned = {(path or MODEL, name) for path, module in network.named_modules()
             for name, _ in module.named_parameters(recurse=False)}
    assert owned <= checked, f"parameters not checked in their module: {owned - checked}"
    # The input is checked where it has a gradient (images, features), not for token ids: read from the
    # data, so that a new integer-input data set needs no entry here.
    assert ((MODEL, "input") in checked) == datamodule.splits.train.x.is_floating_point()


def gradcheck_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`chainrule-gradcheck ARGS`, run as `python -m` so that it also works before the console script is
    (re)installed; the script entry itself is checked in test_console_script_is_declared."""
    return run_cli(sys.executable, "-m", "chainrule.cli.gradcheck", *args, cwd=cwd, env=ONE_THREAD)


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["chainrule-gradcheck"] == "chainrule.cli.gradcheck:cli"


@pytest.mark.slow
def test_cli_exits_non_zero_naming_the_faulty_module(tmp_path: Path) -> None:
    small = ["model.width=16", "model.depth=2"]
    bad = gradcheck_cli("model._target_=tests.support.buggy_models.BuggyActivationMLP", *small,
                        f"hydra.run.dir={tmp_path}/bad", cwd=tmp_path)
    assert bad.returncode != 0
    output = bad.stdout + bad.stderr
    assert f"gradient check failed in module(s) {BuggyActivationMLP.BUGGY_MODULE}:" in output
    good = gradcheck_cli(*small, f"hydra.run.dir={tmp_path}/good", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "gradient check passed" in good.stdout


@pytest.mark.slow
def test_nonsensical_setting_is_refused_before_anything_loads(tmp_path: Path) -> None:
    refused = gradcheck_cli("gradcheck.eps=0", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        ("chainrule: error: gradcheck.eps=0 is not valid: use a finite number in (0, 1] (the finite-difference "
         "step), e.g. gradcheck.eps=1e-5")]
    assert not (tmp_path / "run").exists()  # refused before the run started: no run directory


@pytest.mark.parametrize("buggy", [BuggyMLP, BuggyActivationMLP])
def test_failure_raises_a_user_error_naming_the_module(buggy: type, compose_train) -> None:
    cfg = compose_train(f"model._target_={buggy.__module__}.{buggy.__name__}", "model.width=16",
                        config_name="gradcheck")
    with pytest.raises(GradientCheckError, match=rf"^gradient check failed in module\(s\) "
                                                 rf"{buggy.BUGGY_MODULE.replace('.', '[.]')}: ") as failure:
        gradcheck(cfg)
    assert "kink" not in str(failure.value)
