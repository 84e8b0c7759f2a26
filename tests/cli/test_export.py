"""`chainrule-export`: the checkpoint's model as ONNX (run by ONNX Runtime) or a torch.export program, equal
to the eager model within the tolerance on the checkpoint's own data, for any batch size."""

import sys
import tomllib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from chainrule.checkpointing.discovery import checkpoint_to_use
from chainrule.checkpointing.io import load_checkpoint, load_run_config
from chainrule.cli.export import export
from chainrule.config import builders
from chainrule.core.errors import ChainruleError, ConfigError
from chainrule.training.export import check_format, run_exported
from tests.support.paths import REPO
from tests.support.processes import ONE_THREAD, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOLERANCE = 1e-5
EXPORT = (sys.executable, "-m", "chainrule.cli.export")  # the console script once installed


def eager_model_and_test_split(run_dir: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    checkpoint = checkpoint_to_use(run_dir, run_dir)
    run_cfg = OmegaConf.create(load_run_config(checkpoint))
    datamodule = builders.build_datamodule(run_cfg)
    task = builders.build_task(run_cfg, datamodule)
    task.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    return task.model.eval(), datamodule.splits.test.x


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_onnx_export_matches_the_eager_model(model: str, quick_run, compose_train, tmp_path: Path) -> None:
    run_dir = quick_run(f"model={model}")
    difference = export(compose_train(f"ckpt_path={run_dir}", "format=onnx", config_name="export"))
    assert difference <= TOLERANCE
    eager, test = eager_model_and_test_split(run_dir)
    for batch in (test[:5], test):  # the batch dimension is variable: other sizes than the traced 16
        with torch.no_grad():
            expected = eager(batch)
        assert (run_exported(tmp_path / "model.onnx", "onnx", batch) - expected).abs().max() <= TOLERANCE


@pytest.mark.slow
def test_torch_export_matches_the_eager_model_where_output_says(quick_run, compose_train,
                                                                tmp_path: Path) -> None:
    run_dir = quick_run()
    output = tmp_path / "served" / "digits.pt2"
    assert export(compose_train(f"ckpt_path={run_dir}", "format=torch_export", f"output={output}",
                                config_name="export")) <= TOLERANCE
    eager, test = eager_model_and_test_split(run_dir)
    with torch.no_grad():
        assert torch.allclose(torch.export.load(str(output)).module()(test[:7]), eager(test[:7]), rtol=0,
                              atol=TOLERANCE)


@pytest.mark.slow
def test_a_difference_above_the_tolerance_fails(quick_run, compose_train) -> None:
    cfg = compose_train(f"ckpt_path={quick_run()}", "format=torch_export", config_name="export")
    cfg.tolerance = -1.0  # a tolerance no export meets (the command line refuses it before this point)
    with pytest.raises(ChainruleError, match=r"parity check failed: .* > tolerance=-1"):
        export(cfg)


def test_onnx_without_its_packages_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"format=onnx needs .* pip install 'chainrule\[export\]'"):
        check_format("onnx")


@pytest.mark.slow
def test_the_command_exports_the_latest_run_and_prints_the_difference(quick_run) -> None:
    home = quick_run().parents[3]
    result = run_cli(*EXPORT, "ckpt_path=latest", cwd=home, env=ONE_THREAD)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (run_dir,) = (home / "logs" / "export" / "runs").iterdir()
    assert (run_dir / "model.onnx").is_file()
    assert "max abs difference from the eager model on 16 samples:" in result.stdout
    refused = run_cli(*EXPORT, "ckpt_path=latest", "tolerance=-1", cwd=home)
    assert refused.returncode == 2 and "tolerance=-1 is not valid" in refused.stderr


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["chainrule-export"] == "chainrule.cli.export:cli"


def test_help_describes_the_command_with_examples(tmp_path: Path) -> None:
    result = run_cli(sys.executable, "-m", "chainrule.cli.export", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("chainrule-export: ")
    examples = [line for line in result.stdout.splitlines() if line.startswith("  chainrule-export ")]
    assert 6 <= len(examples) <= 12, examples
