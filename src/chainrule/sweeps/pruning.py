"""Reporting a trial's validation metric to its study every epoch, and stopping it when the pruner says so."""

import lightning as L
import optuna

from chainrule.core import console
from chainrule.core.errors import ConfigError
from chainrule.sweeps.storage import open_storage


class OptunaPruning(L.Callback):
    """After each validation, report `monitor` as the trial's value at step = epoch, and raise
    `optuna.TrialPruned` when `pruner` judges the trial worse than the others at that step.

    The sweeper fills in `study_name`, `storage` and `trial_number` for each trial it launches; when they
    are unset (a plain run) the callback does nothing. Rank 0 talks to the study and tells the other ranks
    whether to stop, so every rank raises together. `pruner=None` reports without pruning.
    """

    def __init__(
        self,
        monitor: str,
        study_name: str | None,
        storage: str | None,
        trial_number: int | None,
        pruner: optuna.pruners.BasePruner | None,
    ):
        self.monitor = monitor
        self.study_name = study_name
        self.storage = storage
        self.trial_number = trial_number
        self.pruner = pruner or optuna.pruners.NopPruner()
        self._trial: optuna.Trial | None = None

    @property
    def active(self) -> bool:
        return self.trial_number is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.active or not trainer.is_global_zero or self._trial is not None:
            return
        if not (self.study_name and self.storage):
            raise ConfigError("callbacks.optuna_pruning needs study_name and storage with trial_number")
        storage = open_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.study_name), self.trial_number)
        self._trial = optuna.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            prune = self._report(trainer)
        if trainer.strategy.broadcast(prune):
            value = trainer.callback_metrics.get(self.monitor)
            message = f"trial {self.trial_number} pruned after epoch {trainer.current_epoch}: " \
                      f"{self.monitor}={float(value):.4f}"
            console.say(message)
            raise optuna.TrialPruned(message)

    def _report(self, trainer: L.Trainer) -> bool:
        assert self._trial is not None
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise ConfigError(f"optimized_metric '{self.monitor}' is not logged; logged metrics: {logged}")
        self._trial.report(float(value), step=trainer.current_epoch)
        return self._trial.should_prune()
