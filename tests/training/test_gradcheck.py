"""training.gradcheck.check_gradients: a module with a wrong backward, with parameters or without, is
caught and named, the correct layers around it are not, the summary says only what applies, settings no
check can use are refused, and the model that is checked is left as it was."""

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from chainrule.core.errors import ConfigError
from chainrule.models.mlp import MLP
from chainrule.training.gradcheck import MODEL, check_gradients
from tests.support.buggy_models import BuggyActivationMLP, BuggyMLP
from tests.support.paths import CONF

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MLP_SHAPE = {"depth": 2, "width": 16, "dropout": 0.0, "norm": "none", "residual": False}


def default_check(**overrides) -> dict:
    """The gradcheck settings of conf/gradcheck.yaml (so the tests use the shipped defaults)."""
    settings = OmegaConf.load(CONF / "gradcheck.yaml").gradcheck
    return instantiate(settings, **overrides).keywords


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))


def test_a_correct_model_passes_with_no_kink_clause() -> None:
    model = MLP((1, 8, 8), 10, activation="tanh", **MLP_SHAPE)  # smooth: no element can sit on a kink
    report = check_gradients(model, nn.CrossEntropyLoss(), *digits(), **default_check())
    assert report.passed, report.failures
    assert report.summary.startswith("gradient check passed")
    assert "kink" not in report.summary


def test_wrong_weight_gradient_is_named_at_its_layer() -> None:
    model = BuggyMLP((1, 8, 8), 10, activation="relu", **MLP_SHAPE)
    report = check_gradients(model, nn.CrossEntropyLoss(), *digits(), **default_check())
    assert report.failed_modules == [BuggyMLP.BUGGY_MODULE]
    [failure] = report.failures
    assert failure.compared == "weight"  # the function's input and bias gradients are right
    assert failure.rel_error > 0.1  # off by a factor of 2, not by rounding


def test_wrong_backward_of_a_parameter_free_module_is_named_exactly() -> None:
    model = BuggyActivationMLP((1, 8, 8), 10, activation="relu", **MLP_SHAPE)
    report = check_gradients(model, nn.CrossEntropyLoss(), *digits(), **default_check())
    assert report.failed_modules == [BuggyActivationMLP.BUGGY_MODULE]
    own = [row for row in report.failures if row.module == BuggyActivationMLP.BUGGY_MODULE]
    assert [row.compared for row in own] == ["input"] and own[0].rel_error > 0.1
    # Its error spoils the gradients of the layers before it in training; checked alone, each is right.
    around = {row.module: row for row in report.rows if row.module in ("blocks.0.linear", "blocks.1.linear", "head")}
    assert set(around) == {"blocks.0.linear", "blocks.1.linear", "head"}
    assert all(row.rel_error <= report.threshold for row in around.values())
    # Only the modules that contain it fail with it.
    assert {row.module for row in report.failures} == {"blocks.1.act", "blocks.1", "blocks", MODEL}


def test_failure_summary_names_the_module_and_no_kink_when_none_was_nan() -> None:
    model = BuggyActivationMLP((1, 8, 8), 10, activation="relu", **MLP_SHAPE)
    report = check_gradients(model, nn.CrossEntropyLoss(), *digits(), **default_check())
    assert not any(math.isnan(row.rel_error) for row in report.rows)
    assert report.summary.startswith(f"gradient check failed in module(s) {BuggyActivationMLP.BUGGY_MODULE}:")
    assert f"(worst: {BuggyActivationMLP.BUGGY_MODULE} input, " in report.summary  # not a module around it
    assert "kink" not in report.summary and "nan" not in report.summary


def test_every_element_on_a_kink_fails_and_says_so() -> None:
    # A ReLU at exactly 0 (no jitter) has no derivative to compare: nothing can be judged.
    x = torch.zeros(4, 6)
    report = check_gradients(nn.ReLU(), nn.MSELoss(), x, torch.ones(4, 6), **default_check(input_jitter=0.0))
    [failure] = report.failures
    assert (failure.module, failure.compared) == (MODEL, "input") and failure.kinks == failure.checked
    assert report.failed_modules == [MODEL]
    assert "every checked element of (model) input sat on a kink" in report.summary
    assert "disagree" not in report.summary  # nothing was compared, so nothing disagreed


def test_elements_on_a_kink_are_left_out_and_counted() -> None:
    x = torch.tensor([[0.0, 1.0, -1.0, 0.0, 2.0, -0.5]])  # two ReLU inputs at the kink
    report = check_gradients(nn.ReLU(), nn.MSELoss(), x, torch.ones(1, 6), **default_check(input_jitter=0.0))
    assert report.passed, report.failures
    assert report.rows[0].kinks == 2
    assert report.summary.endswith("; 2 checked elements sat on a kink and were left out")


# One value each setting refuses and its nearest neighbour that it accepts.
BAD_AND_GOOD = {
    "batch_size": [(0, 1), (1.5, 2), (True, 1)],
    "max_elements": [(0, 1), (-3, 3)],
    "eps": [(0, 1e-5), (1.5, 1.0), (math.nan, 1e-3)],
    "threshold": [(0, 1e-6), (-1e-6, 1e-6), (math.inf, 1.0)],
    "input_jitter": [(-0.01, 0.0), (math.nan, 0.01)],
}


@pytest.mark.parametrize("name, bad, good", [(n, b, g) for n, pairs in BAD_AND_GOOD.items() for b, g in pairs])
def test_nonsensical_setting_is_refused_by_check_gradients(name: str, bad: float, good: float) -> None:
    with pytest.raises(ConfigError, match=rf"^gradcheck\.{name}={bad!r} is not valid: use "):
        check_gradients(nn.Linear(3, 2), nn.MSELoss(), torch.rand(2, 3), torch.rand(2, 2),
                        **default_check(**{name: bad}))
    check_gradients(nn.Linear(3, 2), nn.MSELoss(), torch.rand(2, 3), torch.rand(2, 2),
                    **default_check(**{name: good}))


def test_original_model_is_left_untouched() -> None:
    model = MLP((1, 8, 8), 10, depth=1, width=8, activation="relu", dropout=0.5, norm="none", residual=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_gradients(model, nn.CrossEntropyLoss(), torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)),
                    **default_check())
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
