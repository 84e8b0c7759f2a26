import math

import torch
from torch import nn

from chainrule.core.errors import unknown_choice

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

NORMS = ("none", "batch", "layer")


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise unknown_choice("activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name]()


class Block(nn.Module):
    """Linear -> norm -> activation -> dropout, with an optional identity shortcut around it."""

    def __init__(self, width_in: int, width_out: int, act: str, dropout: float, norm: str, residual: bool):
        super().__init__()
        self.linear = nn.Linear(width_in, width_out)
        self.norm = {"none": nn.Identity, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[norm](width_out) \
            if norm != "none" else nn.Identity()
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)
        # A shortcut needs matching widths; the first block (input -> width) never has one.
        self.residual = residual and width_in == width_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.act(self.norm(self.linear(x))))
        return x + h if self.residual else h


class MLP(nn.Module):
    """`depth` hidden layers of `width` units, then a linear head. Inputs of any shape are flattened."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        depth: int,
        width: int,
        activation: str,
        dropout: float,
        norm: str,
        residual: bool,
    ):
        super().__init__()
        if norm not in NORMS:
            raise unknown_choice("norm", norm, list(NORMS))
        in_features = math.prod(input_shape)
        widths = [in_features] + [width] * depth
        self.blocks = nn.Sequential(
            *(Block(w_in, w_out, activation, dropout, norm, residual) for w_in, w_out in zip(widths, widths[1:]))
        )
        self.head = nn.Linear(widths[-1], num_outputs)

    def sharding_units(self) -> list[nn.Module]:
        """FSDP shards each hidden block on its own (chainrule.models.sharding); the head goes in the root."""
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x.flatten(1)))
