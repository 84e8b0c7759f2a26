from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from chainrule.core.errors import ConfigError
from chainrule.data.augment import draw_flip_and_crop, flip_and_crop
from chainrule.data.indexed import IndexedDataModule


@dataclass(frozen=True)
class Arrays:
    """Inputs and targets of one split. `y` holds class ids (int64) or regression targets (float32)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: torch.Tensor) -> "Arrays":
        return Arrays(self.x[index], self.y[index])


@dataclass(frozen=True)
class Splits:
    train: Arrays
    val: Arrays
    test: Arrays


class InMemoryDataModule(IndexedDataModule):
    """A dataset small enough to hold as tensors, split into train/val/test from `split_seed`.

    Subclasses implement `load()`. Batching, the training order and the loaders' workers are those of
    chainrule.data.indexed.IndexedDataModule.

    With `on_device`, each split is copied to the training device once (when its loader is first built)
    and batches are gathered there (chainrule.data.device_batches): the same batches as a DataLoader
    gives, without loading through the host each step. It needs the split in device memory, and no
    worker processes (`num_workers=0`).

    Image data (N, C, H, W) may be augmented on the device, training batches only: mirrored left-right
    with probability 1/2 when `flip`, and cropped at random from the image padded with `crop_padding`
    zeros (chainrule.data.augment: the same draws for any number of processes, and after a resume).

    k-fold cross-validation: with `folds=k` and `fold=i`, the test split stays the one held out without
    folds, and the other samples are cut into k folds (stratified by class where the targets are class
    labels, from `split_seed`); fold i is the validation split and the other k-1 train (`val_fraction` is
    then unused). Running fold=0..k-1 validates every non-test sample exactly once.
    """

    def __init__(
        self,
        batch_size: int,
        val_fraction: float,
        test_fraction: float,
        split_seed: int,
        num_workers: int,
        persistent_workers: bool,
        pin_memory: bool,
        prefetch_factor: int,
        on_device: bool,
        flip: bool,
        crop_padding: int,
        folds: int | None,
        fold: int | None,
    ):
        super().__init__(batch_size=batch_size, split_seed=split_seed, num_workers=num_workers,
                         persistent_workers=persistent_workers, pin_memory=pin_memory,
                         prefetch_factor=prefetch_factor)
        if on_device and self.num_workers:
            raise ConfigError(f"data.on_device=true reads batches from device memory without worker "
                              f"processes, but data.num_workers={num_workers}; set data.num_workers=0, or "
                              f"data.on_device=false to load with workers")
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
            raise ConfigError(f"data.crop_padding must be an integer >= 0 (pixels of zeros around an image "
                              f"before its random crop; 0: no crop), got {crop_padding!r}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(f"data.val_fraction + data.test_fraction must leave training data, got "
                              f"{val_fraction} + {test_fraction}")
        check_fold(folds, fold)
        self.folds = folds
        self.fold = fold
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.on_device = on_device
        self.flip = flip
        self.crop_padding = crop_padding
        self._splits: Splits | None = None
        self._device_copies: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    # --- what subclasses provide -------------------------------------------------------------------
    def load(self) -> Arrays | tuple[Arrays, Arrays]:
        """All samples (split here by fraction), or the source's own (train, test) pair; validation
        samples are then taken from train."""
        raise NotImplementedError

    #: number of classes for classification data, None for regression
    num_classes: int | None = None

    # --- derived ----------------------------------------------------------------------------------
    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = self._split(self.load())
        return self._splits

    def split_sizes(self) -> dict[str, int]:
        """Samples in each split, for the run's header."""
        return {"train": len(self.splits.train), "val": len(self.splits.val), "test": len(self.splits.test)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.splits.train.x.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Size of the model's output layer: classes, or regression targets."""
        if self.num_classes is not None:
            return self.num_classes
        y = self.splits.train.y
        return 1 if y.ndim == 1 else y.shape[1]

    def _split(self, data: Arrays | tuple[Arrays, Arrays]) -> Splits:
        generator = torch.Generator().manual_seed(self.split_seed)
        if isinstance(data, tuple):
            train, test = data
            if self.folds is not None:
                return self._fold_split(train, torch.arange(len(train)), test)
            order = torch.randperm(len(train), generator=generator)
            n_val = round(self.val_fraction * len(train))
            return Splits(train.subset(order[n_val:]), train.subset(order[:n_val]), test)
        order = torch.randperm(len(data), generator=generator)
        n_val, n_test = round(self.val_fraction * len(data)), round(self.test_fraction * len(data))
        test = data.subset(order[n_val:n_val + n_test])
        if self.folds is not None:  # the same test split as without folds; the folds share the rest
            rest = torch.cat([order[:n_val], order[n_val + n_test:]]).sort().values
            return self._fold_split(data, rest, test)
        return Splits(train=data.subset(order[n_val + n_test:]), val=data.subset(order[:n_val]), test=test)

    def _fold_split(self, data: Arrays, candidates: torch.Tensor, test: Arrays) -> Splits:
        """Fold `self.fold` of `candidates` (indices into `data`) validates, the other folds train."""
        from sklearn.model_selection import KFold, StratifiedKFold

        labels = data.y[candidates]
        stratified = self.num_classes is not None and labels.ndim == 1 and not labels.is_floating_point()
        kind = StratifiedKFold if stratified else KFold
        splitter = kind(self.folds, shuffle=True, random_state=self.split_seed)
        if len(candidates) < self.folds:
            raise ConfigError(f"data.folds={self.folds} needs at least {self.folds} samples outside the test "
                              f"split, the data has {len(candidates)}")
        folds = splitter.split(candidates.numpy(), labels.numpy() if stratified else None)
        train, val = list(folds)[self.fold]
        return Splits(train=data.subset(candidates[train]), val=data.subset(candidates[val]), test=test)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        _ = self.splits
        if (self.flip or self.crop_padding) and len(self.input_shape) != 3:
            raise ConfigError(f"data.flip and data.crop_padding augment images (channels x height x width); "
                              f"this data's inputs are {tuple(self.input_shape)}: set data.flip=false "
                              f"data.crop_padding=0")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches, once on the device: flipped and cropped when `flip` / `crop_padding` ask."""
        trainer, sampler = self.trainer, self._train_sampler
        if not (self.flip or self.crop_padding) or trainer is None or not trainer.training or sampler is None:
            return batch
        x, y = batch
        # The batch's number in its epoch: Lightning counts it as ready right after this hook (and passes
        # it to the training_step as batch_idx); after a resume it counts on from the checkpoint.
        step, part = sampler.locate(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        flips, corners = draw_flip_and_crop(self.split_seed, sampler.epoch, step, sampler.global_batch_size,
                                            self.flip, self.crop_padding)
        return [flip_and_crop(x, flips[part], corners[part], self.crop_padding), y]

    def split_dataset(self, split: str) -> TensorDataset:
        arrays: Arrays = getattr(self.splits, split)
        return TensorDataset(arrays.x, arrays.y)

    def device_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(x, y) of `split` on the trainer's device with `on_device` (copied once per device; on the CPU
        the split itself), else None."""
        if not self.on_device:
            return None
        key = (split, self._device())
        if key not in self._device_copies:
            arrays: Arrays = getattr(self.splits, split)
            self._device_copies[key] = (arrays.x.to(key[1]), arrays.y.to(key[1]))
        return self._device_copies[key]


def check_fold(folds: int | None, fold: int | None) -> None:
    """`data.folds` and `data.fold` are set together (k >= 2 folds, fold in 0..k-1) or not at all."""
    if folds is None and fold is None:
        return
    if folds is None or fold is None:
        missing = "data.fold" if fold is None else "data.folds"
        raise ConfigError(f"k-fold cross-validation needs data.folds and data.fold together; set {missing} "
                          f"too, e.g. chainrule-train -m data.folds=5 'data.fold=range(0,5)'")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"data.folds={folds!r} is not valid: use an integer >= 2 (or null: no folds)")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ConfigError(f"data.fold={fold!r} is not valid: use an integer in 0..{folds - 1} "
                          f"(data.folds={folds})")
