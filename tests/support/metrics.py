"""Reading back what the CSV logger wrote (conf/logger/csv.yaml: <run dir>/csv/metrics.csv): one row per
logging event, with blank cells for the metrics not logged at that event."""

import csv
from pathlib import Path


def metrics_csv(where: Path) -> Path:
    """The metrics file of a run directory (<run dir>/csv/metrics.csv), or `where` itself if it is one."""
    return where if where.suffix == ".csv" else where / "csv" / "metrics.csv"


def read_metrics(where: Path) -> list[dict[str, float]]:
    """The rows in logging order, blank cells left out (`where`: a run directory or a metrics file)."""
    with open(metrics_csv(where), newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def read_metric(where: Path, name: str) -> list[float]:
    """The values of `name` in logging order."""
    return [row[name] for row in read_metrics(where) if name in row]


def metric_steps(where: Path, name: str) -> list[tuple[int, float]]:
    """(global step, value) of each logged value of `name`, in logging order."""
    return [(int(row["step"]), row[name]) for row in read_metrics(where) if name in row]


def metric_columns(where: Path) -> dict[str, list[tuple[int, float]]]:
    """metric_steps of every metric in the file (every column but step and epoch)."""
    rows = read_metrics(where)
    names = dict.fromkeys(name for row in rows for name in row if name not in ("step", "epoch"))
    return {name: [(int(row["step"]), row[name]) for row in rows if name in row] for name in names}
