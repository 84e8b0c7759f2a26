"""A test model that turns non-finite at chosen training steps, as a diverging layer would."""

import torch
from torch import nn

from chainrule.models.mlp import MLP


class Poison(nn.Module):
    """Identity, except that from training forward call `first` on (the optimizer step of that index when
    each step runs one batch) it multiplies by NaN, for `count` calls (None: for good)."""

    def __init__(self, first: int, count: int | None = None):
        super().__init__()
        self.first, self.count, self.calls = first, count, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        call = self.calls
        if self.training and torch.is_grad_enabled():
            self.calls += 1
        if call >= self.first and (self.count is None or call < self.first + self.count):
            return x * float("nan")
        return x


class PoisonedMLP(MLP):
    """The chainrule MLP with a Poison after its first block (so the culprit is `model.poison`)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        nan_at_step: int,
        nan_steps: int | None = None,
        **kwargs,
    ):
        super().__init__(input_shape, num_outputs, **kwargs)
        self.poison = Poison(nan_at_step, nan_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks[0](x.flatten(1))
        h = self.poison(h)
        for block in self.blocks[1:]:
            h = block(h)
        return self.head(h)
