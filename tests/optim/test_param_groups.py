"""Parameter groups: weight decay only on matrices and kernels, per-module learning-rate multipliers (the
longest module name wins), frozen parameters in no group, and schedules that keep the multipliers."""

import re
from functools import partial

import pytest
import torch

from chainrule.core.errors import ConfigError
from chainrule.models.mlp import MLP
from chainrule.optim.param_groups import build_optimizer, param_groups
from chainrule.optim.schedules import one_cycle, warmup_cosine

LR, DECAY = 1e-3, 0.01


def mlp() -> MLP:
    return MLP((1, 8, 8), 10, depth=2, width=16, activation="relu", dropout=0.0, norm="layer", residual=False)


def by_parameter(groups: list[dict], model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    """{parameter name: (lr, weight decay)} from the groups."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)]: (g.get("lr", LR), g["weight_decay"]) for g in groups for p in g["params"]}


def test_without_multipliers_two_groups_split_by_decay() -> None:
    model = mlp()
    groups = by_parameter(param_groups(model, DECAY), model)
    assert groups["blocks.0.linear.weight"] == (LR, DECAY)
    assert groups["blocks.0.linear.bias"] == (LR, 0.0)
    assert groups["blocks.1.norm.weight"] == (LR, 0.0)  # a norm's scale is 1-D: no decay
    assert set(groups) == {name for name, _ in model.named_parameters()}


def test_multipliers_scale_the_rate_of_the_longest_matching_module_and_keep_the_decay_split() -> None:
    model = mlp()
    groups = by_parameter(param_groups(model, DECAY, LR, {"blocks": 0.1, "blocks.1": 0.5}), model)
    assert groups["blocks.0.linear.weight"] == pytest.approx((LR * 0.1, DECAY))
    assert groups["blocks.0.linear.bias"] == pytest.approx((LR * 0.1, 0.0))
    assert groups["blocks.1.linear.weight"] == pytest.approx((LR * 0.5, DECAY))
    assert groups["head.weight"] == pytest.approx((LR, DECAY))
    assert groups["head.bias"] == pytest.approx((LR, 0.0))


def test_frozen_parameters_are_in_no_group_and_get_no_optimizer_state() -> None:
    model = mlp()
    model.blocks.requires_grad_(False)
    optimizer = build_optimizer(partial(torch.optim.AdamW, lr=LR, weight_decay=DECAY), model, {"head": 2.0})
    in_groups = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.head.parameters()}
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    assert all(p.grad is None for p in model.blocks.parameters())
    assert set(optimizer.state) == set(model.head.parameters())


@pytest.mark.parametrize(("multipliers", "message"), [
    ({"blockz": 0.1}, "task.lr_multipliers: the model has no module 'blockz'; did you mean blocks"),
    ({"blocks": 0}, ("task.lr_multipliers.blocks=0 is not valid: use a number > 0 (to stop a module from "
                     "training, task.freeze=[blocks])")),
    ({"head": -1.0}, "task.lr_multipliers.head=-1.0 is not valid"),
])
def test_bad_multipliers_are_refused_naming_the_key(multipliers: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        param_groups(mlp(), DECAY, LR, multipliers)


def test_freezing_everything_is_refused() -> None:
    model = mlp().requires_grad_(False)
    with pytest.raises(ConfigError, match="every parameter of the model is frozen"):
        build_optimizer(partial(torch.optim.SGD, lr=LR), model)


@pytest.mark.parametrize("schedule", [
    partial(warmup_cosine, warmup_fraction=0.2, min_lr_ratio=0.1),
    partial(one_cycle, pct_start=0.3, div_factor=25.0, final_div_factor=1e4),
])
def test_schedules_keep_each_groups_multiplier(schedule: partial) -> None:
    model = mlp()
    optimizer = build_optimizer(partial(torch.optim.SGD, lr=LR), model, {"blocks": 0.1})
    scheduler = schedule(optimizer, total_steps=20)["scheduler"]
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    rates = {g["lr_multiplier"]: g["lr"] for g in optimizer.param_groups}
    assert rates[0.1] == pytest.approx(0.1 * rates[1.0])
