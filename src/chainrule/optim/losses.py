"""Losses that torch.nn does not provide in the form the task feeds them."""

import torch
from torch import nn
from torch.nn import functional as F


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Binary cross-entropy on logits that also accepts integer class labels, one-hot encoding them.

    Lets a classifier train on per-class sigmoids (multi-label style) from the same data as softmax.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not target.is_floating_point():
            target = F.one_hot(target, num_classes=logits.shape[-1]).to(logits.dtype)
        return super().forward(logits, target)


class TokenCrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy over every position of a sequence: logits (B, T, V), targets (B, T)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits.flatten(0, -2), target.flatten())
