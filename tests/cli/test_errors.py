"""Bad input ends in one clear message and a non-zero exit, with no traceback."""

from pathlib import Path

import pytest
import torch

from tests.support.processes import run_cli


def assert_clean_failure(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_unknown_optimizer_is_one_line_listing_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli("chainrule-train", "optim=nonexistent", cwd=tmp_path)
    assert_clean_failure(result, "unknown optim 'nonexistent'", "adagrad, adam, adamw, rmsprop, sgd")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_option_inside_a_sweep_is_caught_before_any_job(tmp_path: Path) -> None:
    result = run_cli("chainrule-train", "-m", "model=mlp,transformerz", cwd=tmp_path)
    assert_clean_failure(result, "unknown model 'transformerz'", "autoencoder, cnn, gpt")
    assert not (tmp_path / "logs").exists()


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    result = run_cli("chainrule-train", "trainer.max_epochz=3", cwd=tmp_path)
    assert_clean_failure(result, "trainer.max_epochz")


@pytest.mark.slow
def test_wrong_type_names_the_argument(tmp_path: Path) -> None:
    result = run_cli("chainrule-train", "trainer.max_epochs=abc", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert_clean_failure(result, "max_epochs")


@pytest.mark.slow
def test_missing_dataset_names_the_directory_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-data-here"
    result = run_cli("chainrule-train", "data=mnist", f"paths.data_dir={missing}", f"hydra.run.dir={tmp_path}/run",
                     cwd=tmp_path)
    assert_clean_failure(result, str(missing / "MNIST" / "raw"), "data.download=true")


@pytest.mark.slow
def test_missing_checkpoint(tmp_path: Path) -> None:
    result = run_cli("chainrule-eval", f"ckpt_path={tmp_path}/nothing.ckpt", f"hydra.run.dir={tmp_path}/run",
                     cwd=tmp_path)
    assert_clean_failure(result, "checkpoint not found", "nothing.ckpt")


@pytest.mark.slow
def test_corrupt_checkpoint(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    torch.save({"state_dict": {}}, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    result = run_cli("chainrule-eval", f"ckpt_path={corrupt}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert_clean_failure(result, "the checkpoint is damaged (truncated or corrupt)", "corrupt.ckpt")
