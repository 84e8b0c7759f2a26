"""What chainrule-predict predicts on: a split of a data module, or a folder of input files; batched and
sharded over ranks as evaluation is (chainrule.data.sampling.eval_batches: contiguous shares, no
padding), each sample carrying its position so that gathered predictions can be put back in order.

A folder of inputs holds one sample per file, taken in the order of the file names:
- `.npy` (numpy.save) or `.pt` (torch.save of a tensor): the values the model takes, in the shape of one
  sample of its training data (e.g. (1, 8, 8) for digits, scaled to [0, 1] as the data module scales them);
- `.png`: an image of the training data's size, grey for 1-channel data, RGB for 3; pixels scaled to [0, 1].
Other files are ignored.
"""

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from chainrule.core.errors import ConfigError
from chainrule.data.sampling import eval_batches

INPUT_SUFFIXES = (".npy", ".pt", ".png")


class PredictionInputs(L.LightningDataModule):
    """Inputs `x` (N, ...) with their ids (`ids[i]` names sample i in the output) and, when known, their
    targets; `predict_dataloader` yields (inputs, positions) batches of about `batch_size` samples over all
    ranks together. `num_classes` and `num_outputs` are those of the model's training data."""

    def __init__(self, x: torch.Tensor, ids: Sequence[int | str], targets: torch.Tensor | None,
                 batch_size: int, num_classes: int | None, num_outputs: int):
        super().__init__()
        self.x, self.ids, self.targets = x, list(ids), targets
        self.batch_size = batch_size
        self.num_classes, self.num_outputs = num_classes, num_outputs
        self.input_shape = tuple(x.shape[1:])

    def predict_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        batches = eval_batches(len(self.x), max(1, self.batch_size // world), world, rank)
        samples = TensorDataset(self.x, torch.arange(len(self.x)))
        return DataLoader(samples, batch_sampler=FixedBatches(batches))


class FixedBatches(Sampler[list[int]]):
    """Given batches of indices as a batch sampler object (Lightning's predict loop wraps the batch sampler
    to record batch indices, which a plain list does not allow)."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def read_inputs(folder: str | Path, input_shape: tuple[int, ...]) -> tuple[list[str], torch.Tensor]:
    """The samples in `folder` (one per file, see the module's docstring) as float32 (N, *input_shape) in
    the order of their file names, with the file names. `input_shape`: one sample of the training data."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"inputs={folder}: no such folder; pass a folder of {', '.join(INPUT_SUFFIXES)} "
                          f"files")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in INPUT_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"inputs={folder}: the folder holds no {', '.join(INPUT_SUFFIXES)} files (one "
                          f"sample each)")
    samples = [_read(path, input_shape[0]) for path in files]
    for path, sample in zip(files, samples):
        if tuple(sample.shape) != tuple(input_shape):
            raise ConfigError(f"inputs: {path.name} has shape {tuple(sample.shape)}, the model takes "
                              f"{tuple(input_shape)} (one sample of its training data)")
    return [p.name for p in files], torch.stack(samples)


def _read(path: Path, channels: int) -> torch.Tensor:
    try:
        if path.suffix.lower() == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        if path.suffix.lower() == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"it holds a {type(value).__name__}, not a tensor")
            return value.float()
        return _read_image(path, channels)
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"inputs: cannot read {path}: {str(error).strip().splitlines()[0]}") from None


def _read_image(path: Path, channels: int) -> torch.Tensor:
    from PIL import Image

    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise ValueError(f"images are read for 1- or 3-channel data, the model's data has {channels} "
                         f"channels")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert(modes[channels]), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(pixels)
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)  # (C, H, W)
