"""The Hydra face of chainrule's Optuna sweeper; the work is done in chainrule.sweeps.optuna_sweep, imported
only when a sweep runs (Hydra imports this module on every start)."""

from typing import Any, Dict, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ChainruleOptunaSweeper(Sweeper):
    """Runs trials of an Optuna study stored in a database: resumable, shared by parallel workers, with
    pruning. Arguments: see ChainruleOptunaSweeperConf in config.py."""

    def __init__(
        self,
        sampler: Optional[DictConfig],
        pruner: Optional[DictConfig],
        direction: str,
        study_name: Optional[str],
        storage: Optional[str],
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        heartbeat_interval: int,
        grace_period: Optional[int],
        params: Optional[Dict[str, Any]],
    ) -> None:
        self.settings = dict(
            sampler=sampler, pruner=pruner, direction=direction, study_name=study_name, storage=storage,
            n_trials=n_trials, n_jobs=n_jobs, max_failure_rate=max_failure_rate,
            heartbeat_interval=heartbeat_interval, grace_period=grace_period, params=params,
        )
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from chainrule.sweeps.optuna_sweep import OptunaSweep

        assert self.hydra_context is not None and self.config is not None and self.launcher is not None
        return OptunaSweep(hydra_context=self.hydra_context, config=self.config, launcher=self.launcher,
                           **self.settings).run(arguments)
