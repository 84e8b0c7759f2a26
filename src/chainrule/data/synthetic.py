import math

import torch

from chainrule.data.base import Arrays, InMemoryDataModule


class SyntheticDataModule(InMemoryDataModule):
    """Gaussian inputs labelled by a fixed random linear teacher: learnable, instant, no files."""

    def __init__(self, num_samples: int, input_shape: tuple[int, ...], num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_samples = num_samples
        self.shape = tuple(input_shape)
        self.num_classes = num_classes

    def load(self) -> Arrays:
        generator = torch.Generator().manual_seed(self.split_seed)
        x = torch.randn(self.num_samples, *self.shape, generator=generator)
        teacher = torch.randn(math.prod(self.shape), self.num_classes, generator=generator)
        return Arrays(x, (x.flatten(1) @ teacher).argmax(dim=1))
