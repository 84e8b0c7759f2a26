"""The Hydra face of chainrule's Optuna sweeper; the work is done in chainrule.sweeps.optuna_sweep, imported
only when a sweep runs (Hydra imports this module on every start). Its settings and their defaults live in
conf/hydra/sweeper/chainrule_optuna.yaml; their meaning in chainrule.sweeps.optuna_sweep.OptunaSweep."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ChainruleOptunaSweeper(Sweeper):
    """Runs trials of an Optuna study stored in a database: resumable, shared by parallel workers, with
    pruning. `settings` are OptunaSweep's keyword arguments, passed through unchanged."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from chainrule.sweeps.optuna_sweep import OptunaSweep

        assert self.hydra_context is not None and self.config is not None and self.launcher is not None
        return OptunaSweep(hydra_context=self.hydra_context, config=self.config, launcher=self.launcher,
                           **self.settings).run(arguments)
