"""training.gradcheck.check_gradients: a layer with a wrong backward is caught and named, and the model
that is checked is left as it was."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from chainrule.models.mlp import MLP
from chainrule.training.gradcheck import check_gradients
from tests.support.buggy_models import BuggyMLP
from tests.support.paths import CONF

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def default_check(**overrides) -> dict:
    """The gradcheck settings of conf/gradcheck.yaml (so the tests use the shipped defaults)."""
    settings = OmegaConf.load(CONF / "gradcheck.yaml").gradcheck
    return instantiate(settings, **overrides).keywords


def test_wrong_backward_is_caught_and_named() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    settings = default_check()
    good = check_gradients(MLP((1, 8, 8), 10, depth=2, width=16, activation="relu", dropout=0.0, norm="none", residual=False), nn.CrossEntropyLoss(), x, y, **settings)
    bad = check_gradients(BuggyMLP((1, 8, 8), 10, depth=2, width=16, activation="relu", dropout=0.0, norm="none", residual=False), nn.CrossEntropyLoss(), x, y, **settings)
    assert good.passed
    assert bad.failed_layers == [BuggyMLP.BUGGY_LAYER]
    [failure] = bad.failures
    assert failure.tensor == "weight"  # the function's input and bias gradients are right
    assert failure.rel_error > 0.1  # off by a factor of 2, not by rounding


def test_original_model_is_left_untouched() -> None:
    model = MLP((1, 8, 8), 10, depth=1, width=8, activation="relu", dropout=0.5, norm="none", residual=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_gradients(model, nn.CrossEntropyLoss(), torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)),
                    **default_check())
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
