"""CSV metrics that continue across resumes: `<run dir>/csv/metrics.csv`.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so every resume would erase the
history (and the plots drawn from it). This one keeps the file, appends, and rewinds it to a step when
a run resumes (chainrule.callbacks.history): rows of steps at or after the checkpoint's were logged after
it was written, and the resumed run logs them again.
"""

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    """Lightning's writer, minus the deletion at start: the header of an existing file is kept and new
    rows are appended to it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def rewind(self, step: int) -> None:
        """Drop every row, saved or pending, whose step is `step` or later."""
        self.metrics = [row for row in self.metrics if row.get("step", 0) < step]
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if row.get("step") not in (None, "") and int(row["step"]) < step]
        temporary = f"{self.metrics_file_path}.rewind"
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(temporary, self.metrics_file_path)  # a kill now leaves the old file or the new one


class ContinuingCSVLogger(CSVLogger):
    """Lightning's CSVLogger whose metrics.csv survives resumes; see the module docstring."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    def rewind(self, step: int) -> None:
        if isinstance(self.experiment, _ContinuingWriter):  # ranks other than 0 hold a no-op stand-in
            self.experiment.rewind(step)
