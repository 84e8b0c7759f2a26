"""The Task's fine-tuning switches: frozen modules get no gradient and stay in eval mode."""

import pytest
import torch
from hydra.errors import InstantiationException

from chainrule.config import builders
from chainrule.core.errors import ConfigError


def test_frozen_modules_get_no_gradient_and_stay_in_eval_mode(compose_train) -> None:
    cfg = compose_train("task.freeze=[blocks.0]", "model.dropout=0.5", "model.norm=batch")
    task = builders.build_task(cfg, builders.build_datamodule(cfg))
    task.train()  # what Lightning calls at the start of every training epoch
    frozen, trained = task.model.blocks[0], task.model.blocks[1]
    assert not frozen.training and not any(m.training for m in frozen.modules())
    assert trained.training and task.model.head.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in trained.parameters())
    running_mean = frozen.norm.running_mean.clone()
    task.model(torch.randn(8, 1, 8, 8)).sum().backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert torch.equal(frozen.norm.running_mean, running_mean)  # batch-norm statistics fixed too


def test_an_unknown_module_to_freeze_names_the_close_ones(compose_train) -> None:
    cfg = compose_train("task.freeze=[block.0]")
    with pytest.raises(InstantiationException) as refused:  # the entry points show its cause alone
        builders.build_task(cfg, builders.build_datamodule(cfg))
    assert isinstance(refused.value.__cause__, ConfigError)
    message = str(refused.value.__cause__)
    assert "task.freeze: the model has no module 'block.0'; did you mean blocks.0" in message
