"""Fitting a composed config in-process with a bare trainer (no callbacks, no loggers): what every config
option and data source must survive."""

from dataclasses import dataclass

import lightning as L
import torch
from omegaconf import DictConfig

from chainrule.config import builders


@dataclass
class Fitted:
    trainer: L.Trainer
    datamodule: L.LightningDataModule
    task: L.LightningModule
    parameters_changed: bool  # some parameter differs from its value before fitting


def fit_bare(cfg: DictConfig) -> Fitted:
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    before = [p.detach().clone() for p in task.parameters()]
    trainer = builders.build_trainer(cfg, callbacks=[], loggers=[])
    trainer.fit(task, datamodule=datamodule)
    changed = any(not torch.equal(b, a) for b, a in zip(before, task.parameters()))
    return Fitted(trainer, datamodule, task, changed)
