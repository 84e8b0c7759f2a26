"""The k-fold report at the end of `chainrule-train -m data.folds=5 'data.fold=range(0,5)'`: each validation
metric's mean ± std over the folds, at each fold's best epoch, in <sweep dir>/folds.csv and on the console."""

import csv
import statistics
from pathlib import Path

import pytest

from chainrule.sweeps.folds import FoldResult, best_epoch_metrics, fold_results, summarize
from tests.support.metrics import read_metrics
from tests.support.processes import ONE_THREAD, run_cli


def write_metrics(job: Path, rows: list[dict[str, object]]) -> None:
    (job / "csv").mkdir(parents=True)
    with open(job / "csv" / "metrics.csv", "w", newline="") as handle:
        columns = ["epoch", "step", "train/loss_epoch", "val/acc", "val/loss"]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_a_fold_counts_with_its_best_epoch_by_the_monitored_metric(tmp_path: Path) -> None:
    write_metrics(tmp_path, [{"epoch": 0, "step": 9, "val/loss": 0.9, "val/acc": 0.5},
                             {"epoch": 0, "step": 9, "train/loss_epoch": 1.0},
                             {"epoch": 1, "step": 19, "val/loss": 0.4, "val/acc": 0.8},
                             {"epoch": 2, "step": 29, "val/loss": 0.6, "val/acc": 0.9}])
    assert best_epoch_metrics(tmp_path, "val/loss", "min") == {"val/loss": 0.4, "val/acc": 0.8}
    assert best_epoch_metrics(tmp_path, "val/acc", "max") == {"val/loss": 0.6, "val/acc": 0.9}
    last = {"val/loss": 0.6, "val/acc": 0.9}  # the monitor is no validation metric
    assert best_epoch_metrics(tmp_path, "train/loss_epoch", "min") == last


def test_settings_other_than_the_fold_are_summarized_apart() -> None:
    results = [FoldResult("optim.lr=0.1", f, {"val/acc": v}) for f, v in enumerate([0.5, 0.7])] + \
              [FoldResult("optim.lr=0.01", f, {"val/acc": v}) for f, v in enumerate([0.8, 0.9])]
    rows = {row["setting"]: row for row in summarize(results)}
    assert rows["optim.lr=0.1"]["mean"] == pytest.approx(0.6)
    assert rows["optim.lr=0.01"]["std"] == pytest.approx(statistics.stdev([0.8, 0.9]))
    assert rows["optim.lr=0.01"]["fold_1"] == 0.9


def test_a_multirun_without_folds_gets_no_report(tmp_path: Path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("data:\n  fold: null\n")
    assert fold_results(tmp_path) == []


@pytest.mark.slow
def test_five_folds_from_the_command_line_give_the_aggregate_table(sweeps, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "folds"
    result = run_cli("chainrule-train", "-m", "data.folds=5", "data.fold=range(0,5)", *sweeps.fast_trial,
                     f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, env={"CHAINRULE_QUICK": "1", **ONE_THREAD})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep_dir / "folds.csv", newline="") as handle:
        rows = {row["metric"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"val/acc", "val/loss"}
    for metric, row in rows.items():
        # Each fold's value at its best epoch (lowest val/loss), read back from the job's own metrics.
        per_fold = []
        for fold in range(5):
            epochs = [r for r in read_metrics(sweep_dir / str(fold)) if "val/loss" in r]
            per_fold.append(min(epochs, key=lambda r: r["val/loss"])[metric])
        assert [float(row[f"fold_{fold}"]) for fold in range(5)] == pytest.approx(per_fold)
        assert float(row["mean"]) == pytest.approx(statistics.fmean(per_fold))
        assert float(row["std"]) == pytest.approx(statistics.stdev(per_fold))
        assert row["folds"] == "5"
    assert "5-fold cross-validation" in result.stdout and "± " in result.stdout
