"""YAML owns the defaults: every chainrule constructor or factory that a config option names declares no
default of its own, so no value can differ between code and conf/ (the constructor is the schema; the
YAML file is the value)."""

import inspect
import re
from pathlib import Path

import pytest
from hydra.utils import get_object

from chainrule.config.groups import config_dir

# Arguments chainrule fills in from Hydra's job itself (chainrule.config.builders.hydra_job), never from
# a config value: absent outside a Hydra app.
FROM_HYDRA_JOB = {"job_type", "sweep_dir", "job_overrides"}


def chainrule_targets() -> dict[str, list[Path]]:
    """Every `_target_` under conf/ that is chainrule's own, with the files naming it."""
    found: dict[str, list[Path]] = {}
    for path in sorted(config_dir().rglob("*.yaml")):
        for target in re.findall(r"_target_:\s*(chainrule\.[\w.]+)", path.read_text()):
            found.setdefault(target, []).append(path.relative_to(config_dir()))
    return found


def own_signatures(target: object) -> list[inspect.Signature]:
    """The signatures a config value can reach: a function's, or the __init__ of a class and of its
    chainrule base classes (chainrule classes pass **kwargs up to them)."""
    if not inspect.isclass(target):
        return [inspect.signature(target)]
    return [inspect.signature(c.__dict__["__init__"]) for c in target.__mro__
            if "__init__" in c.__dict__ and c.__module__.startswith("chainrule.")]


@pytest.mark.parametrize("target", sorted(chainrule_targets()))
def test_configurable_code_declares_no_defaults(target: str) -> None:
    defaulted = [f"{name}={parameter.default!r}" for signature in own_signatures(get_object(target))
                 for name, parameter in signature.parameters.items()
                 if parameter.default is not inspect.Parameter.empty and name not in FROM_HYDRA_JOB]
    assert not defaulted, (f"{target} (named in {chainrule_targets()[target]}) has defaults {defaulted}: "
                           f"move each value into the YAML option and drop it from the code")


def test_the_check_sees_chainrule_targets() -> None:
    targets = chainrule_targets()
    assert {"chainrule.models.mlp.MLP", "chainrule.training.task.Task", "chainrule.optim.schedules.warmup_cosine",
            "chainrule.data.sklearn.SklearnDataModule"} <= set(targets)
