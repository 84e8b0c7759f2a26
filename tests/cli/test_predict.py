"""`chainrule-predict`: one row per input, in input order, from the checkpoint alone; the same rows under
DDP; a split of the data or a folder of files; CSV or Parquet; a clear refusal where a row per input makes
no sense."""

import csv
import logging
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from chainrule.checkpointing.discovery import checkpoint_to_use
from chainrule.checkpointing.io import load_run_config
from chainrule.cli.eval import evaluate
from chainrule.cli.predict import predict, refuse_per_position_outputs, refuse_unsupported
from chainrule.config import builders
from chainrule.core.errors import ConfigError
from chainrule.training.prediction import check_format, prediction_columns
from tests.support.configs import compose_config
from tests.support.paths import REPO
from tests.support.processes import ONE_THREAD, run_cli

PREDICT = (sys.executable, "-m", "chainrule.cli.predict")  # the console script once installed
NO_BAR = "trainer.enable_progress_bar=false"
CLASSES = 10


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def probabilities(row: dict[str, str]) -> list[float]:
    return [float(row[f"prob_{c}"]) for c in range(CLASSES)]


def predict_cli(home: Path, *args: str) -> Path:
    """`chainrule-predict args...` run in `home`; the table it wrote."""
    before = set((home / "logs" / "predict" / "runs").glob("*"))
    result = run_cli(*PREDICT, *args, NO_BAR, cwd=home, env=ONE_THREAD)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (run_dir,) = set((home / "logs" / "predict" / "runs").glob("*")) - before
    return run_dir / "predictions.csv"


@pytest.fixture(scope="module")
def digits_run(quick_run) -> Path:
    return quick_run()


@pytest.fixture(scope="module")
def test_split_rows(digits_run: Path) -> list[dict[str, str]]:
    """The predictions of the digits run's test split, by `chainrule-predict ckpt_path=latest` in its home."""
    return read_rows(predict_cli(digits_run.parents[3], "ckpt_path=latest"))


@pytest.mark.slow
def test_predictions_of_the_test_split_reproduce_eval_accuracy(digits_run: Path, test_split_rows,
                                                               compose_train) -> None:
    tested = evaluate(compose_train(f"ckpt_path={digits_run}", NO_BAR, config_name="eval"))
    run_cfg = OmegaConf.create(load_run_config(checkpoint_to_use(digits_run, digits_run)))
    test = builders.build_datamodule(run_cfg).splits.test
    assert [int(r["id"]) for r in test_split_rows] == list(range(len(test)))
    assert [int(r["label"]) for r in test_split_rows] == test.y.tolist()
    assert all(int(r["predicted"]) == int(np.argmax(probabilities(r))) for r in test_split_rows)
    assert all(sum(probabilities(r)) == pytest.approx(1.0, abs=1e-5) for r in test_split_rows)
    # test/acc is torchmetrics' MulticlassAccuracy: the mean over classes of each class's accuracy.
    per_class = [np.mean([r["predicted"] == r["label"] for r in test_split_rows if int(r["label"]) == c])
                 for c in range(CLASSES)]
    assert float(np.mean(per_class)) == pytest.approx(tested["test/acc"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ddp_ranks_give_the_same_rows_in_the_same_order(digits_run: Path, test_split_rows) -> None:
    home = digits_run.parents[3]
    rows = read_rows(predict_cli(home, "ckpt_path=latest", "trainer=ddp_cpu", "trainer.devices=2"))
    assert [(r["id"], r["label"], r["predicted"]) for r in rows] == \
        [(r["id"], r["label"], r["predicted"]) for r in test_split_rows]
    np.testing.assert_allclose([probabilities(r) for r in rows], [probabilities(r) for r in test_split_rows],
                               rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_folder_of_files_is_predicted_in_file_name_order(digits_run: Path, test_split_rows, compose_train,
                                                           tmp_path: Path) -> None:
    run_cfg = OmegaConf.create(load_run_config(checkpoint_to_use(digits_run, digits_run)))
    test = builders.build_datamodule(run_cfg).splits.test
    folder = tmp_path / "inputs"
    folder.mkdir()
    np.save(folder / "a.npy", test.x[0].numpy())
    torch.save(test.x[1].clone(), folder / "b.pt")
    pixels = (test.x[2, 0] * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels, mode="L").save(folder / "c.png")
    (folder / "notes.txt").write_text("not an input")

    rows = read_rows(predict(compose_train(f"ckpt_path={digits_run}", f"inputs={folder}", NO_BAR,
                                           config_name="predict")))
    assert [r["id"] for r in rows] == ["a.npy", "b.pt", "c.png"] and "label" not in rows[0]
    for row, expected in zip(rows[:2], test_split_rows[:2]):
        assert row["predicted"] == expected["predicted"]
        assert probabilities(row) == pytest.approx(probabilities(expected), abs=1e-6)
    # The image holds the sample rounded to 8 bits: nearly the same probabilities.
    assert probabilities(rows[2]) == pytest.approx(probabilities(test_split_rows[2]), abs=1e-2)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_parquet_holds_the_same_table(digits_run: Path, test_split_rows, compose_train) -> None:
    import pyarrow.parquet as pq

    path = predict(compose_train(f"ckpt_path={digits_run}", "format=parquet", "split=test", NO_BAR,
                                 config_name="predict"))
    assert path.suffix == ".parquet"
    table = pq.read_table(path).to_pydict()
    assert list(table) == list(test_split_rows[0])
    assert table["predicted"] == [int(r["predicted"]) for r in test_split_rows]
    assert table["prob_3"] == pytest.approx([float(r["prob_3"]) for r in test_split_rows], abs=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_data_chosen_here_is_split_with_the_seed_given(digits_run: Path, test_split_rows, compose_train,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    same = read_rows(predict(compose_train(f"ckpt_path={digits_run}", "data=digits", NO_BAR,
                                           config_name="predict")))
    assert same == test_split_rows  # the training run's seed: its own test split
    with caplog.at_level(logging.WARNING, logger="chainrule"):
        other = read_rows(predict(compose_train(f"ckpt_path={digits_run}", "data=digits", "seed=1", NO_BAR,
                                                config_name="predict")))
    assert [r["label"] for r in other] != [r["label"] for r in test_split_rows]
    assert "the checkpoint's run used seed=12345" in caplog.text


@pytest.mark.slow
def test_an_unknown_split_lists_the_splits(digits_run: Path, compose_train) -> None:
    with pytest.raises(ConfigError, match="unknown split 'tests'; choose one of: test, train, val"):
        predict(compose_train(f"ckpt_path={digits_run}", "split=tests", config_name="predict"))


def test_parquet_without_pyarrow_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an environment without pyarrow imports
    with pytest.raises(ConfigError, match=r"format=parquet needs pyarrow: pip install pyarrow .*format=csv"):
        check_format("parquet")


def test_an_unknown_format_lists_the_formats() -> None:
    with pytest.raises(ConfigError, match="unknown format 'json'; choose one of: csv, parquet"):
        check_format("json")


def test_regression_rows_hold_the_target_and_the_prediction() -> None:
    columns = prediction_columns([0, 1], torch.tensor([[0.5], [-1.0]]), torch.tensor([[0.4], [-0.8]]),
                                 num_classes=None, sigmoid=False)
    assert columns == {"id": [0, 1], "target": pytest.approx([0.4, -0.8]), "prediction": [0.5, -1.0]}


def test_a_model_trained_with_a_binary_loss_gets_per_class_sigmoids() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    columns = prediction_columns(["x.npy"], logits, None, num_classes=3, sigmoid=True)
    assert [columns[f"prob_{c}"][0] for c in range(3)] == pytest.approx(torch.sigmoid(logits)[0].tolist())
    assert columns["predicted"] == [0] and "label" not in columns


def test_a_reconstruction_checkpoint_is_refused() -> None:
    with pytest.raises(ConfigError, match="reconstructs its input"):
        refuse_unsupported(compose_config("experiment=digits_autoencoder"))


def test_a_language_model_is_refused() -> None:
    cfg = compose_config("experiment=tokens_gpt", "paths.root_dir=.")
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    with pytest.raises(ConfigError, match=r"outputs \(1, 64, 64\) per batch of one \(per position"):
        refuse_per_position_outputs(task, datamodule.splits.test.x[:1])


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["chainrule-predict"] == "chainrule.cli.predict:cli"


def test_help_describes_the_command_with_examples(tmp_path: Path) -> None:
    result = run_cli(sys.executable, "-m", "chainrule.cli.predict", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("chainrule-predict: ")
    examples = [line for line in result.stdout.splitlines() if line.startswith("  chainrule-predict ")]
    assert 6 <= len(examples) <= 12, examples
