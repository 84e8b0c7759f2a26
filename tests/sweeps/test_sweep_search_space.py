"""Search spaces: YAML specs and command-line sweeps to Optuna distributions, sampled points to overrides."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from chainrule.core.errors import ConfigError
from chainrule.sweeps import search_space


def parse(line: str):
    return OverridesParser.create().parse_override(line)


def test_dotted_and_nested_keys_name_the_same_parameters():
    dotted = search_space.from_params({
        "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "model.width": {"type": "int", "low": 32, "high": 256, "step": 32},
    })
    nested = search_space.from_params({
        "optim": {"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}},
        "model": {"width": {"type": "int", "low": 32, "high": 256, "step": 32}},
    })
    assert dotted == nested == {
        "optim.lr": FloatDistribution(1e-5, 1e-1, log=True),
        "model.width": IntDistribution(32, 256, step=32),
    }


def test_categorical_choices():
    space = search_space.from_params({"model.activation": {"type": "categorical",
                                                           "choices": ["relu", "gelu"]}})
    assert space == {"model.activation": CategoricalDistribution(["relu", "gelu"])}


@pytest.mark.parametrize("spec, message", [
    ({"type": "uniform", "low": 0, "high": 1}, "choose one of: categorical, float, int"),
    ({"type": "float", "low": 0, "high": 1, "base": 10},
     "does not take base; it takes: low, high, log, step"),
    ({"type": "float", "low": 1, "high": 0}, "optim.lr"),
    ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "optim.lr"),
    ("1e-3", "must be a mapping with a 'type'"),
])
def test_bad_specs_name_the_parameter_and_the_fix(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        search_space.from_params({"optim.lr": spec})
    assert "optim.lr" in str(error.value)


@pytest.mark.parametrize("line, expected", [
    ("model.width=64,128", CategoricalDistribution([64, 128])),
    ("model.activation=choice(relu,gelu)", CategoricalDistribution(["relu", "gelu"])),
    ("model.depth=range(1,5)", IntDistribution(1, 4)),
    ("model.width=range(32,257,32)", IntDistribution(32, 256, step=32)),
    ("model.dropout=interval(0.0,0.5)", FloatDistribution(0.0, 0.5)),
    ("optim.lr=tag(log,interval(1e-4,1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
])
def test_command_line_sweeps(line, expected):
    assert search_space.from_sweep_override(parse(line)) == expected


def test_grid_lists_every_value():
    space = search_space.from_params({
        "model.depth": {"type": "int", "low": 1, "high": 3},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
        "model.activation": {"type": "categorical", "choices": ["relu", "gelu"]},
    })
    grid = search_space.grid(space)
    assert grid["model.depth"] == [1, 2, 3]
    assert grid["model.dropout"] == pytest.approx([0.0, 0.1, 0.2])
    assert grid["model.activation"] == ["relu", "gelu"]
    assert search_space.grid_size(space) == 18


def test_continuous_range_has_no_grid():
    space = search_space.from_params({"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}})
    with pytest.raises(ConfigError, match="optim.lr.*step.*categorical"):
        search_space.grid(space)


@pytest.mark.parametrize("value", [0.0031622776601683794, 1e-05, 64, True, None, "relu", "1e-3", "it's a\\b",
                                   "a\\'b\\"])
def test_overrides_read_back_as_the_sampled_value(value):
    (override,) = search_space.overrides({"key": value})
    assert parse(override).value() == value
