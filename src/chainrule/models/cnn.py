import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv(3x3)-BN-ReLU-MaxPool stages, global average pooling, then a two-layer head."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_outputs: int,
        channels: tuple[int, ...],
        hidden: int,
        dropout: float,
    ):
        super().__init__()
        stages: list[nn.Module] = []
        c_in = input_shape[0]
        for c_out in channels:
            stages += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def sharding_units(self) -> list[nn.Module]:
        """FSDP shards the convolutional stages and the head as two units (chainrule.models.sharding)."""
        return [self.features, self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
