"""Configs of the `chainrule_optuna` sweeper, registered with Hydra when Hydra scans its plugins.

Select it with `hydra/sweeper: chainrule_optuna` (the presets in conf/hparams_search/ do), the sampler
with `hydra/sweeper/sampler=tpe|random|cmaes|grid` and the pruner with
`hydra/sweeper/pruner=median|hyperband|none`.
Sampler and pruner nodes are Optuna constructor arguments (`_target_`). This module is imported on every
Hydra start, so it imports nothing heavy.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ChainruleOptunaSweeperConf:
    _target_: str = "hydra_plugins.chainrule_optuna_sweeper.optuna_sweeper.ChainruleOptunaSweeper"
    # The sweeper builds sampler and pruner itself: the grid sampler needs the search space, and a seed is
    # offset per worker.
    _recursive_: bool = False
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "median"}])

    # Optuna sampler (hydra/sweeper/sampler); a set seed is offset by the number of trials the study
    # already has when a worker starts, so resumed or parallel workers do not repeat each other.
    sampler: Any = None
    # Optuna pruner (hydra/sweeper/pruner); trials report the config's `optimized_metric` every epoch.
    pruner: Any = None
    # Whether the sweep maximizes or minimizes `optimized_metric`.
    direction: str = "minimize"
    # The study's name in the storage; null: the name of the sweep directory.
    study_name: Optional[str] = None
    # SQLAlchemy URL of the database holding the study (e.g. postgresql://user:password@host/db);
    # null: a SQLite file optuna.db in the sweep directory. Running the same sweep again resumes the study.
    storage: Optional[str] = None
    # Trials the study should end with, counting completed and pruned trials of all workers together.
    n_trials: int = 20
    # Trials this worker launches at a time (run in parallel by a launcher such as submitit).
    n_jobs: int = 1
    # The sweep stops with an error once more than max_failure_rate x n_trials trials have failed.
    max_failure_rate: float = 0.25
    # Seconds between a worker's signs of life for its running trials; a trial whose worker has been
    # silent for grace_period seconds (null: 2 x heartbeat_interval) is failed and queued again.
    heartbeat_interval: int = 30
    grace_period: Optional[int] = None
    # The search space: {override key: {type: float|int|categorical, **distribution arguments}}; see
    # chainrule.sweeps.search_space. Sweep overrides on the command line (a,b or interval(...)) add to it.
    params: Dict[str, Any] = field(default_factory=dict)


SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None,
            # Counts trials still running as if they had a bad value, so parallel trials spread out.
            "constant_liar": True},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None},
    # Its search space comes from `params` (categorical choices, stepped int/float ranges).
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None},
}

PRUNERS = {
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 0},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "max_resource": "auto",
                  "reduction_factor": 3},
    "none": {"_target_": "optuna.pruners.NopPruner"},
}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="chainrule_optuna", node=ChainruleOptunaSweeperConf,
            provider="chainrule")
for name, node in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="chainrule")
for name, node in PRUNERS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="chainrule")
