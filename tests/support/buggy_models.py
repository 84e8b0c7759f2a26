"""Models with a deliberately wrong backward, for proving that chainrule-gradcheck catches one."""

import torch
from torch import nn

from chainrule.models.mlp import MLP

WRONG_FACTOR = 2.0


class WrongWeightGradLinear(torch.autograd.Function):
    """y = x W^T + b, whose backward returns WRONG_FACTOR x the true gradient for W (x and b are right)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        return grad_out @ weight, WRONG_FACTOR * grad_out.T @ x, grad_out.sum(0)


class BuggyLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return WrongWeightGradLinear.apply(x, self.weight, self.bias)


class BuggyMLP(MLP):
    """chainrule's MLP (same config keys) with the second block's linear layer replaced by a BuggyLinear: its
    weight gradient is wrong, its input and bias gradients are right."""

    BUGGY_MODULE = "blocks.1.linear"

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, **kwargs):
        super().__init__(input_shape, num_outputs, **kwargs)
        good = self.blocks[1].linear
        buggy = BuggyLinear(good.in_features, good.out_features)
        buggy.load_state_dict(good.state_dict())
        self.blocks[1].linear = buggy


class WrongBackwardTanh(torch.autograd.Function):
    """tanh, whose backward returns WRONG_FACTOR x the true gradient: a parameter-free layer's bug."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return WRONG_FACTOR * grad_out * (1 - y * y)


class BuggyTanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return WrongBackwardTanh.apply(x)


class BuggyActivationMLP(MLP):
    """chainrule's MLP (same config keys) with the second block's activation, between the block's linear
    layer and the head, replaced by a BuggyTanh. The error reaches the gradients of every layer before it
    (blocks.0.linear, blocks.1.linear) and of the input; the layers themselves are right."""

    BUGGY_MODULE = "blocks.1.act"

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, **kwargs):
        super().__init__(input_shape, num_outputs, **kwargs)
        self.blocks[1].act = BuggyTanh()
