"""The k-fold cross-validation report: when a multirun over folds ends (`chainrule-train -m data.folds=5
'data.fold=range(0,5)'`), each validation metric of its jobs as mean ± standard deviation over the folds,
printed and written to <sweep dir>/folds.csv.

Each job contributes its validation metrics at its best epoch (by `monitor.metric`, the epoch of its best
checkpoint), read from the metrics.csv its CSV logger wrote. Jobs that differ in more than the fold (a grid
`-m data.folds=5 'data.fold=range(0,5)' optim.lr=1e-3,1e-2`) are reported per setting.
"""

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from chainrule.config.builders import sweep_overrides
from chainrule.config.run_record import OVERRIDES, RECORD_DIR, override_key
from chainrule.core import console

FOLD_KEY = "data.fold"


@dataclass(frozen=True)
class FoldResult:
    setting: str  # the job's overrides that differ between the sweep's jobs, the fold's left out
    fold: int
    metrics: dict[str, float]


class FoldReport(Callback):
    """A Hydra callback (conf/hydra/default.yaml): writes the report at the end of a multirun whose jobs
    ran several folds, and does nothing for other multiruns. filename: the report's name in the sweep
    directory."""

    def __init__(self, filename: str):
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        results = fold_results(sweep_dir)
        if len({r.fold for r in results}) > 1:  # a sweep at one fixed fold is no cross-validation
            write_report(results, sweep_dir / self.filename)


def fold_results(sweep_dir: Path) -> list[FoldResult]:
    """The validation metrics of every job in `sweep_dir` that ran a fold (its record has data.fold set)."""
    results = []
    for job in sorted(p for p in sweep_dir.iterdir() if (p / RECORD_DIR / "config.yaml").is_file()):
        config = OmegaConf.load(job / RECORD_DIR / "config.yaml")
        fold = OmegaConf.select(config, FOLD_KEY, default=None)
        if fold is None:
            continue
        metrics = best_epoch_metrics(job, str(config.monitor.metric), str(config.monitor.mode))
        if not metrics:
            console.warn(f"fold {fold}: {job} holds no validation metrics (did it fail, or log without "
                         f"logger=csv?); left out of the report")
            continue
        overrides = yaml.safe_load((job / RECORD_DIR / OVERRIDES).read_text()) or []
        setting = [o for o in sweep_overrides(overrides, str(sweep_dir)) if override_key(o) != FOLD_KEY]
        results.append(FoldResult(" ".join(setting), int(fold), metrics))
    return results


def best_epoch_metrics(job: Path, monitor: str, mode: str) -> dict[str, float]:
    """The `val/` metrics of the job's epoch with the best `monitor` value (the last epoch when the monitor
    is not a validation metric), from the metrics.csv files under the job's directory."""
    epochs: dict[float, dict[str, float]] = {}
    for path in job.rglob("metrics.csv"):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
                if values:
                    epochs.setdefault(float(row.get("epoch") or 0), {}).update(values)
    if not epochs:
        return {}
    ranked = [e for e in epochs if monitor in epochs[e]]
    if not ranked:
        return epochs[max(epochs)]
    pick = min if mode == "min" else max
    return epochs[pick(ranked, key=lambda e: epochs[e][monitor])]


def summarize(results: list[FoldResult]) -> list[dict[str, Any]]:
    """One row per setting and metric: mean, standard deviation (sample, n-1) and each fold's value."""
    folds = sorted({r.fold for r in results})
    rows = []
    for setting in dict.fromkeys(r.setting for r in results):
        ours = sorted((r for r in results if r.setting == setting), key=lambda r: r.fold)
        for metric in sorted({m for r in ours for m in r.metrics}):
            values = {r.fold: r.metrics[metric] for r in ours if metric in r.metrics}
            std = statistics.stdev(values.values()) if len(values) > 1 else math.nan
            rows.append({"setting": setting, "metric": metric, "mean": statistics.fmean(values.values()),
                         "std": std, "folds": len(values),
                         **{f"fold_{f}": values.get(f, "") for f in folds}})
    return rows


def write_report(results: list[FoldResult], path: Path) -> list[dict[str, Any]]:
    """Print the table and write it as CSV to `path`; returns its rows."""
    rows = summarize(results)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with_setting = any(row["setting"] for row in rows)
    folds = max(row["folds"] for row in rows)
    table = Table(title=f"{folds}-fold cross-validation", box=None, pad_edge=False)
    for column in (["setting"] if with_setting else []) + ["metric", "mean ± std", "folds"]:
        table.add_column(column, justify="right" if column != "setting" else "left")
    for row in rows:
        cells = [row["metric"], f"{row['mean']:.4f} ± {row['std']:.4f}", str(row["folds"])]
        table.add_row(*([row["setting"]] if with_setting else []), *cells)
    console.say(console.render(table))
    console.say(f"k-fold report: {path}")
    return rows
