"""Fixtures for sweep tests: tiny digits-MLP sweeps through the real `chainrule-train -m` command."""

import os
import subprocess
from pathlib import Path

import optuna
import pytest

from tests.support.processes import ONE_THREAD, run_cli
from tests.support.processes import start as start_process

# Each trial trains 3 short epochs; the sweep runs its trials inside the sweeping process (Hydra's basic
# launcher), so a sweep pays the ~10 s of imports once.
FAST_TRIAL = [
    "callbacks=none",
    "logger=csv",
    "scheduler=constant",
    "model.width=64",
    "test=false",
    "+trainer.enable_checkpointing=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


class Sweeps:
    """Starts sweeps and reads their studies.

    A sweep runs with one math thread per process (ONE_THREAD): tiny matrices gain nothing from more, and
    with several processes on two cores, OpenMP threads spinning against each other made each step ~5x
    slower.
    """

    max_epochs = 3
    fast_trial = FAST_TRIAL

    def args(self, sweep_dir: Path, *overrides: str, preset: str = "digits_mlp", epochs: int = max_epochs
             ) -> list[str]:
        """The arguments of `chainrule-train -m` for a sweep with the hparams_search `preset`."""
        return ["-m", f"hparams_search={preset}", f"trainer.max_epochs={epochs}", *FAST_TRIAL,
                f"hydra.sweep.dir={sweep_dir}", *overrides]

    def start(self, sweep_dir: Path, *overrides: str, **kwargs) -> subprocess.Popen:
        """A sweep in the background (its own process group, so that a test can kill it whole)."""
        with open(sweep_dir.parent / f"{sweep_dir.name}-{os.urandom(3).hex()}.log", "w") as log:
            return start_process("chainrule-train", *self.args(sweep_dir, *overrides, **kwargs),
                                 cwd=sweep_dir.parent, env=ONE_THREAD, output=log, new_session=True)

    def run(self, sweep_dir: Path, *overrides: str, check: bool = True, timeout: int = 300, **kwargs
            ) -> subprocess.CompletedProcess:
        result = run_cli("chainrule-train", *self.args(sweep_dir, *overrides, **kwargs), cwd=sweep_dir.parent,
                         env=ONE_THREAD, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"sweep failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                        f"{result.stderr[-5000:]}")
        return result

    @staticmethod
    def storage(sweep_dir: Path) -> str:
        return f"sqlite:///{sweep_dir / 'optuna.db'}"

    def study(self, sweep_dir: Path, study_name: str = "digits_mlp") -> optuna.Study:
        return optuna.load_study(study_name=study_name, storage=self.storage(sweep_dir))

    def new_study(self, sweep_dir: Path, study_name: str = "digits_mlp") -> optuna.Study:
        """The study a sweep into (new) `sweep_dir` will continue, created first so that a test can enqueue
        trials in it."""
        sweep_dir.mkdir()
        return optuna.create_study(study_name=study_name, storage=self.storage(sweep_dir),
                                   direction="maximize")

    def completed(self, sweep_dir: Path) -> int:
        """Completed trials so far (0 while the sweep has not created its study yet). Read only once the
        sweep wrote study.yaml, after its study: opening the database earlier would race the sweep in
        creating its tables."""
        if not (sweep_dir / "study.yaml").is_file():
            return 0
        try:
            return sum(t.state.name == "COMPLETE" for t in self.study(sweep_dir).get_trials(deepcopy=False))
        except (KeyError, optuna.exceptions.StorageInternalError):
            return 0

    @staticmethod
    def states(study: optuna.Study) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts


@pytest.fixture(scope="session")
def sweeps() -> Sweeps:
    return Sweeps()
