"""Augmentation of in-memory image batches on the device: a random horizontal flip and a random crop of
the image padded with zeros (the usual CIFAR recipe), applied to whole training batches after they reach
the device (chainrule.data.base.InMemoryDataModule.on_after_batch_transfer), for batches gathered on the
device and batches from a DataLoader alike.

The random draws of a step are made for its whole global batch, on the CPU, from a seed of (seed, epoch,
step) (chainrule.data.draws.draw_seed); each process takes the draws of its micro-batch's samples. So a
sample is flipped and cropped the same way whatever the number of processes and accumulation steps, and
again after a resume, and the draws cost the device's random generator nothing (dropout masks stay as
they were).
"""

import torch
import torch.nn.functional as F

from chainrule.data.draws import draw_seed


def draw_flip_and_crop(seed: int, epoch: int, step: int, global_batch_size: int, flip: bool,
                       padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws of one optimizer step's global batch, on the CPU: whether each sample is flipped
    (bool, `(global_batch_size,)`; all false without `flip`) and the top-left corner of its crop in the
    padded image (int64, `(global_batch_size, 2)`: row, column in 0..2 x padding)."""
    generator = torch.Generator().manual_seed(draw_seed(seed, epoch, step))
    flips = torch.rand(global_batch_size, generator=generator) < 0.5
    corners = torch.randint(2 * padding + 1, (global_batch_size, 2), generator=generator)
    return flips & flip, corners


def flip_and_crop(x: torch.Tensor, flips: torch.Tensor, corners: torch.Tensor, padding: int) -> torch.Tensor:
    """Images `x` (N, C, H, W) padded with `padding` zeros on each side, cropped back to H x W at `corners`
    (N, 2) and mirrored left-right where `flips` (N,): one gather on x's device."""
    n, c, h, w = x.shape
    flips, corners = flips.to(x.device), corners.to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = corners[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
    columns = torch.arange(w, device=x.device)
    # A mirrored crop reads its columns right to left: column j of the result is column W-1-j of the crop.
    columns = corners[:, 1, None] + torch.where(flips[:, None], w - 1 - columns, columns)  # (N, W)
    samples = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[samples, channels, rows[:, None, :, None], columns[:, None, None, :]]
