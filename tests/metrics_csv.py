"""Reading back what the CSV logger wrote: one row per logging event, blank cells elsewhere."""

import csv
from pathlib import Path


def read_metric(run_dir: Path, name: str) -> list[float]:
    """The values of `name` in logging order from <run_dir>/csv/metrics.csv."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]
