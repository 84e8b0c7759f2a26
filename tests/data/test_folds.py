"""k-fold cross-validation in the in-memory data modules: the test split stays held out, the folds' validation
sets are disjoint and cover every other sample, stratified by class."""

from collections import Counter

import pytest
import torch

from chainrule.core.errors import ConfigError
from chainrule.data.base import Arrays
from chainrule.data.sklearn import SklearnDataModule
from chainrule.data.vision import VisionDataModule
from tests.support.fake_vision_data import write_mnist

FOLDS = 5
IN_MEMORY = {"num_workers": 0, "persistent_workers": False, "pin_memory": False, "prefetch_factor": 2,
             "on_device": True, "flip": False, "crop_padding": 0}


def digits(folds: int | None = None, fold: int | None = None) -> SklearnDataModule:
    return SklearnDataModule(dataset="digits", batch_size=64, val_fraction=0.15, test_fraction=0.15,
                             split_seed=3, **IN_MEMORY, folds=folds, fold=fold)


def samples(arrays: Arrays) -> Counter:
    """The split's samples as a multiset (digits holds a few identical images)."""
    return Counter((x.numpy().tobytes(), int(y)) for x, y in zip(arrays.x, arrays.y))


def test_five_folds_validate_every_non_test_sample_exactly_once_and_hold_the_test_split_out() -> None:
    plain = digits().splits
    non_test = samples(plain.train) + samples(plain.val)
    validated = Counter()
    for fold in range(FOLDS):
        splits = digits(FOLDS, fold).splits
        assert torch.equal(splits.test.x, plain.test.x) and torch.equal(splits.test.y, plain.test.y)
        assert samples(splits.train) + samples(splits.val) == non_test  # train and val partition the rest
        share = sum(non_test.values()) // FOLDS
        assert len(splits.val) in (share, share + 1)
        validated += samples(splits.val)
    assert validated == non_test  # disjoint (a multiset sum) and covering


def test_the_folds_are_stratified_by_class() -> None:
    overall = torch.bincount(digits(FOLDS, 0).splits.train.y, minlength=10) + \
        torch.bincount(digits(FOLDS, 0).splits.val.y, minlength=10)
    for fold in range(FOLDS):
        counts = torch.bincount(digits(FOLDS, fold).splits.val.y, minlength=10)
        assert ((counts - overall / FOLDS).abs() <= 1).all(), (counts, overall / FOLDS)


def test_the_same_fold_is_the_same_split_each_time() -> None:
    assert torch.equal(digits(FOLDS, 2).splits.val.x, digits(FOLDS, 2).splits.val.x)


def test_a_source_with_its_own_test_set_folds_its_training_set(tmp_path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", n_train=60, n_test=20)
    data = [VisionDataModule(dataset="mnist", data_dir=str(tmp_path), download=False, batch_size=8,
                             val_fraction=0.1, split_seed=0, **IN_MEMORY, folds=3, fold=fold).splits
            for fold in range(3)]
    assert all(len(s.test) == 20 and len(s.train) + len(s.val) == 60 for s in data)
    assert sum(len(s.val) for s in data) == 60


@pytest.mark.parametrize(("folds", "fold", "message"), [
    (5, None, "needs data.folds and data.fold together; set data.fold too"),
    (None, 0, "set data.folds too"),
    (1, 0, "data.folds=1 is not valid: use an integer >= 2"),
    (5, 5, "data.fold=5 is not valid: use an integer in 0..4"),
    (5, -1, "data.fold=-1 is not valid"),
])
def test_inconsistent_fold_settings_are_refused(folds, fold, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        digits(folds, fold)
