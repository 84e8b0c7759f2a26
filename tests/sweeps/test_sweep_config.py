"""The sweeper plugin, the hparams_search presets and the W&B Sweeps example, checked by composing configs."""

import importlib
import tomllib

import optuna
import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import OmegaConf

from chainrule.config.groups import check_group_choices, config_dir
from chainrule.core.errors import ConfigError
from chainrule.sweeps import search_space
from chainrule.sweeps.pruning import OptunaPruning
from tests.support.configs import compose_config
from tests.support.paths import REPO

PRESETS = sorted(p.stem for p in (config_dir() / "hparams_search").glob("*.yaml"))
SWEEPER = config_dir() / "hydra" / "sweeper"
SAMPLERS = sorted(p.stem for p in (SWEEPER / "sampler").glob("*.yaml"))
PRUNERS = sorted(p.stem for p in (SWEEPER / "pruner").glob("*.yaml"))


@pytest.fixture(autouse=True)
def no_hydra_config_left_behind():
    """Some tests set Hydra's global config to resolve `${hydra:...}`; other tests must not see it."""
    yield
    HydraConfig.instance().cfg = None


def compose_train(*overrides: str, hydra_config: bool = True):
    return compose_config(*overrides, return_hydra_config=hydra_config)


def logged_metrics(cfg) -> set[str]:
    """What the task logs each validation: its loss and each configured metric."""
    return {"val/loss", *(f"val/{name}" for name in (cfg.task.metrics or {}))}


def test_hydra_discovers_the_sweeper_plugin():
    names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)]
    assert "hydra_plugins.chainrule_optuna_sweeper.optuna_sweeper.ChainruleOptunaSweeper" in names


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_selects_the_sweeper_and_a_metric_the_task_logs(preset):
    cfg = compose_train(f"hparams_search={preset}")
    assert cfg.hydra.sweeper._target_.endswith("ChainruleOptunaSweeper")
    assert cfg.optimized_metric in logged_metrics(cfg)
    assert cfg.hydra.sweeper.direction in ("maximize", "minimize")
    for name in search_space.from_params(OmegaConf.to_container(cfg.hydra.sweeper.params)):
        assert OmegaConf.select(cfg, name) is not None, f"{preset} searches {name}, which is not a config key"
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"  # TPE unless chosen otherwise


def test_sweep_dir_is_stable_so_the_same_command_finds_its_study():
    cfg = compose_train("hparams_search=digits_mlp")
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.sweep.dir.endswith("/logs/train/sweeps/digits_mlp")
    cfg = compose_train("hparams_search=digits_mlp", "hydra.sweeper.study_name=lr_wd_v2")
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.sweep.dir.endswith("/sweeps/lr_wd_v2")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_choice_builds(sampler):
    cfg = compose_train("hparams_search=digits_mlp", f"hydra/sweeper/sampler={sampler}")
    extra = {"search_space": {"optim.lr": [1e-3, 1e-2]}} if sampler == "grid" else {}
    assert isinstance(instantiate(cfg.hydra.sweeper.sampler, **extra), optuna.samplers.BaseSampler)


@pytest.mark.parametrize("pruner", PRUNERS)
def test_pruning_callback_gets_the_chosen_pruner_and_is_idle_outside_a_sweep(pruner):
    cfg = compose_train("hparams_search=digits_mlp", f"hydra/sweeper/pruner={pruner}")
    HydraConfig.instance().set_config(cfg)
    callback = instantiate(cfg.callbacks.optuna_pruning)
    assert isinstance(callback, OptunaPruning)
    target = yaml.safe_load((SWEEPER / "pruner" / f"{pruner}.yaml").read_text())["_target_"]
    assert type(callback.pruner).__name__ == target.rsplit(".", 1)[1]
    assert callback.monitor == "val/acc" and not callback.active


def test_unknown_preset_lists_the_presets():
    expected = "unknown hparams_search 'nope'; choose one of: " + ", ".join(PRESETS)
    with pytest.raises(ConfigError, match=expected):
        check_group_choices(["hparams_search=nope"])


def test_wandb_sweep_example_passes_hydra_overrides_to_chainrule_train():
    example = yaml.safe_load((REPO / "docs" / "wandb_sweep.yaml").read_text())
    command = [example["program"] if part == "${program}" else part for part in example["command"]]
    assert command[0] == "chainrule-train" and command[-1] == "${args_no_hyphens}"
    # One sample of each parameter, as the agent writes them: key=value.
    sample = [f"{key}={spec['values'][0] if 'values' in spec else spec['min']}"
              for key, spec in example["parameters"].items()]
    cfg = compose_train(*command[1:-1], *sample, hydra_config=False)
    assert cfg.optim.lr == example["parameters"]["optim.lr"]["min"]
    assert cfg.model.width == example["parameters"]["model.width"]["values"][0]
    assert example["metric"]["name"] in logged_metrics(cfg)


def test_console_scripts_resolve():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "chainrule-sweep-report" in scripts
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))
