from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from chainrule.core.errors import ConfigError
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
        folds: int | None,
        fold: int | None,
    ):
        super().__init__(batch_size=batch_size, split_seed=split_seed, num_workers=num_workers,
                         persistent_workers=persistent_workers, pin_memory=pin_memory,
                         prefetch_factor=prefetch_factor)
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
        self._splits: Splits | None = None

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

    def split_dataset(self, split: str) -> TensorDataset:
        arrays: Arrays = getattr(self.splits, split)
        return TensorDataset(arrays.x, arrays.y)


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
