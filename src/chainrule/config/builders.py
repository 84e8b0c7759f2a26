"""The one place where configuration becomes objects, and where derived values are computed."""

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from chainrule.callbacks.config_agreement import SameConfigOnAllRanks
from chainrule.callbacks.history import LoggerHistory
from chainrule.callbacks.rng_states import RngStatesInCheckpoint
from chainrule.callbacks.run_config import RunConfigInCheckpoint
from chainrule.data.base import InMemoryDataModule
from chainrule.training.task import Task


def call_with_derived(factory: Callable[..., Any], **derived: Any) -> Any:
    """Call `factory` with those derived values (e.g. input_shape, num_classes) that it accepts.

    Derived values come from the data, so they are never written in YAML; a factory that does not take
    one (an autoencoder has no num_outputs) simply does not get it.
    """
    params = inspect.signature(factory).parameters  # named ones only: **kwargs often forwards elsewhere
    return factory(**{k: v for k, v in derived.items() if k in params})


def build_datamodule(cfg: DictConfig) -> InMemoryDataModule:
    return instantiate(cfg.data)


def build_task(cfg: DictConfig, datamodule: InMemoryDataModule) -> Task:
    derived = {"input_shape": datamodule.input_shape, "num_outputs": datamodule.num_outputs,
               "num_classes": datamodule.num_classes}
    model = call_with_derived(instantiate(cfg.model), **derived)
    metrics = {
        name: call_with_derived(metric, **derived) if isinstance(metric, partial) else metric
        for name, metric in instantiate(cfg.task.metrics or {}).items()
    }
    return instantiate(
        cfg.task,
        model=model,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        metrics=metrics,
        _convert_="object",
    )


SWITCHED_CALLBACKS = {"enable_progress_bar": ProgressBar, "enable_checkpointing": Checkpoint}


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # `trainer.enable_progress_bar/enable_checkpointing=false` are the switches users
    # reach for; Lightning refuses them while such a callback is configured, so they win over the group.
    switched_off = tuple(kind for switch, kind in SWITCHED_CALLBACKS.items() if not cfg.trainer.get(switch, True))
    callbacks = [c for c in callbacks if not isinstance(c, switched_off)]
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks += [
        RunConfigInCheckpoint(config),
        SameConfigOnAllRanks(config),
        RngStatesInCheckpoint(),  # without it a resumed run draws other dropout masks
        LoggerHistory(),  # without it a resumed run's metrics would repeat or lose steps
    ]
    return callbacks


def sweep_overrides(job_overrides: list[str], sweep_dir: str) -> list[str]:
    """The overrides of a multirun job that differ between its jobs: those whose key is not set to one
    fixed value on the multirun's command line (recorded in <sweep dir>/multirun.yaml). Keys a sweeper
    chooses itself (Optuna) are never on the command line, so they count as differing too; the trial's
    bookkeeping (`trial.*`, which the Optuna sweeper adds) does not."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    recorded = Path(sweep_dir) / "multirun.yaml"
    if not recorded.is_file():
        return job_overrides
    parser = OverridesParser.create()
    command_line = list(OmegaConf.load(recorded).hydra.overrides.task)
    fixed = {o.key_or_group for o in parser.parse_overrides(command_line) if not o.is_sweep_override()}
    return [o for o, parsed in zip(job_overrides, parser.parse_overrides(job_overrides))
            if parsed.key_or_group not in fixed and not parsed.key_or_group.startswith("trial.")]


def hydra_job() -> dict[str, Any]:
    """What Hydra knows about the running job, for loggers that group and name runs by it: the job name
    (train, eval), the sweep directory of a multirun (None for a single run) and, for a multirun job,
    the overrides that tell it from its sibling jobs. Empty outside a Hydra app (a config from `compose`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {"job_type": hydra_cfg.job.name}
    differing = sweep_overrides(list(hydra_cfg.overrides.task), hydra_cfg.sweep.dir)
    return {"job_type": hydra_cfg.job.name, "sweep_dir": hydra_cfg.sweep.dir,
            "job_overrides": ",".join(differing)}


def build_loggers(cfg: DictConfig) -> list[Logger]:
    job = hydra_job()
    return [call_with_derived(instantiate(c, _partial_=True), **job)
            for c in (cfg.get("logger") or {}).values() if c is not None]


def build_tuner(cfg: DictConfig) -> Callable[..., dict[str, float]] | None:
    """The finder chosen by `tune=` (called with trainer, task, datamodule, output_dir), or None."""
    return instantiate(cfg.tune) if cfg.get("tune") else None


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger]) -> L.Trainer:
    if not loggers:
        # LearningRateMonitor refuses to start without a logger; with logger=none there is nothing to feed.
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # Without a checkpoint callback (callbacks=none, trainer.enable_checkpointing=false) Lightning would add
    # a ModelCheckpoint of its own, saving every epoch where the config shows no checkpoints at all.
    has_checkpoints = any(isinstance(c, Checkpoint) for c in callbacks)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_checkpointing=has_checkpoints)
