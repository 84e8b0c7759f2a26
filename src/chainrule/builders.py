"""The one place where configuration becomes objects, and where derived values are computed."""

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from chainrule.checkpointing import RngStatesInCheckpoint, RunConfigInCheckpoint
from chainrule.config_agreement import SameConfigOnAllRanks
from chainrule.data.base import InMemoryDataModule
from chainrule.task import Task


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


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # `trainer.enable_progress_bar=false` / `enable_model_summary=false` are the switches users reach for;
    # Lightning refuses them while such a callback is configured, so they win over the callbacks group.
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_model_summary", True):
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks += [
        RunConfigInCheckpoint(config),
        SameConfigOnAllRanks(config),
        RngStatesInCheckpoint(),  # without it a resumed run draws other dropout masks
    ]
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Logger]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def build_tuner(cfg: DictConfig) -> Callable[..., dict[str, float]] | None:
    """The finder chosen by `tune=` (called with trainer, task, datamodule, output_dir), or None."""
    return instantiate(cfg.tune) if cfg.get("tune") else None


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger]) -> L.Trainer:
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
