"""Weight initialization schemes for the layers that carry weights."""

from collections.abc import Callable

import torch
from torch import nn

from chainrule.core.errors import unknown_choice

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

SCHEMES: dict[str, Callable[[torch.Tensor], object]] = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    # He initialization: variance 2/fan_in keeps ReLU activations from shrinking layer by layer.
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}


def initialize(model: nn.Module, scheme: str) -> None:
    """Re-initialize the weights of every linear and conv layer with `scheme` and zero their biases.

    `default` keeps PyTorch's per-layer defaults.
    """
    if scheme == "default":
        return
    if scheme not in SCHEMES:
        raise unknown_choice("init scheme", scheme, ["default", *SCHEMES])
    init = SCHEMES[scheme]
    for module in model.modules():
        if isinstance(module, LAYERS):
            init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
