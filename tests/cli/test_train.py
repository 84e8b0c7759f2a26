"""End-to-end training runs: the default experiment, every preset, precision/clipping/accumulation,
evaluation of a checkpoint, and the autoencoder."""

import re
from pathlib import Path

import pytest

from chainrule.cli.train import train
from tests.support.configs import conf_options
from tests.support.data_files import write_tokens
from tests.support.metrics import read_metric
from tests.support.processes import run_cli

pytestmark = pytest.mark.slow
NO_BAR = "trainer.enable_progress_bar=false"


def test_default_experiment_trains_to_95_percent_and_eval_reproduces_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trained = run_cli("chainrule-train", f"hydra.run.dir={run_dir}", NO_BAR, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    test_acc = read_metric(run_dir, "test/acc")
    assert test_acc and test_acc[-1] >= 0.95
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert str(run_dir) in trained.stdout  # the run directory is announced

    best = re.search(r"best checkpoint: (\S+\.ckpt)", trained.stdout.replace("\n", ""))
    assert best, trained.stdout[-2000:]
    eval_dir = tmp_path / "eval"
    evaluated = run_cli("chainrule-eval", f"ckpt_path={best.group(1)}", f"hydra.run.dir={eval_dir}", NO_BAR,
                        cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    for metric in ("test/acc", "test/loss"):
        assert read_metric(eval_dir, metric) == pytest.approx(read_metric(run_dir, metric), abs=1e-6)


@pytest.fixture(scope="module")
def token_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("tokens") / "files")


@pytest.mark.parametrize("experiment", conf_options("experiment"))
def test_experiment_runs_with_fast_dev_run(experiment: str, compose_train, token_files: Path) -> None:
    # An experiment on files that `chainrule-prepare` writes gets tiny ones of the same format.
    files = [f"data.data_dir={token_files}"] if experiment == "stdlib_gpt" else []
    metrics = train(compose_train(f"experiment={experiment}", "debug=fast_dev_run", NO_BAR, *files))
    assert "test/loss" in metrics


def test_mnist_cnn_reaches_95_percent(compose_train, tmp_path: Path) -> None:
    train(compose_train("experiment=mnist_cnn", NO_BAR))
    assert read_metric(tmp_path, "test/acc")[-1] >= 0.95


def test_bf16_clipping_accumulation_and_warmup_cosine_lower_the_loss(compose_train, tmp_path: Path) -> None:
    train(compose_train("optim=adamw", "scheduler=warmup_cosine", "trainer.precision=bf16-mixed",
                        "trainer.gradient_clip_val=1.0", "trainer.accumulate_grad_batches=2",
                        "trainer.max_epochs=5", NO_BAR))
    losses = read_metric(tmp_path, "train/loss_epoch")
    assert len(losses) == 5 and losses[-1] < 0.5 * losses[0]


def test_autoencoder_reconstruction_loss_halves(compose_train, tmp_path: Path) -> None:
    train(compose_train("experiment=digits_autoencoder", NO_BAR))
    losses = read_metric(tmp_path, "val/loss")
    assert losses[-1] <= 0.5 * losses[0], losses


def test_regression_experiment_beats_predicting_the_mean(compose_train, tmp_path: Path) -> None:
    train(compose_train("experiment=diabetes_regression", NO_BAR))
    # Targets are standardized, so always predicting the mean scores R^2 = 0.
    assert read_metric(tmp_path, "test/r2")[-1] > 0.3


def test_fused_adamw_with_gradient_clipping_under_bf16(compose_train, tmp_path: Path) -> None:
    # Lightning alone refuses this combination; chainrule clips unscaled bf16 gradients itself.
    train(compose_train("optim=adamw", "optim.fused=true", "trainer.precision=bf16-mixed",
                        "trainer.gradient_clip_val=0.5", "trainer.max_epochs=3", NO_BAR))
    losses = read_metric(tmp_path, "train/loss_epoch")
    assert losses[-1] < 0.5 * losses[0]


def test_compiled_channels_last_cnn_trains(compose_train, tmp_path: Path) -> None:
    train(compose_train("model=cnn", "task.compile=default", "task.channels_last=true", "trainer.max_epochs=2",
                        "trainer.limit_train_batches=8", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
                        NO_BAR))
    losses = read_metric(tmp_path, "train/loss_epoch")
    assert losses[-1] < losses[0]
