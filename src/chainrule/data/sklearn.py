import torch

from chainrule.core.errors import unknown_choice
from chainrule.data.base import Arrays, InMemoryDataModule


def _digits() -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    return Arrays(x, torch.tensor(bunch.target, dtype=torch.int64))


def _diabetes() -> Arrays:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=True)
    y = torch.tensor(bunch.target, dtype=torch.float32).unsqueeze(1)
    # Standardized so that losses and learning rates are on the same scale as for other data sets.
    y = (y - y.mean()) / y.std()
    return Arrays(torch.tensor(bunch.data, dtype=torch.float32), y)


LOADERS = {"digits": (_digits, 10), "diabetes": (_diabetes, None)}


class SklearnDataModule(InMemoryDataModule):
    """A data set bundled with scikit-learn (no download): `digits` (classification) or `diabetes`
    (regression)."""

    def __init__(self, dataset: str, **kwargs):
        if dataset not in LOADERS:
            raise unknown_choice("scikit-learn dataset", dataset, list(LOADERS))
        super().__init__(**kwargs)
        self.dataset = dataset
        self.num_classes = LOADERS[dataset][1]

    def load(self) -> Arrays:
        return LOADERS[self.dataset][0]()
