"""torchvision's classic image data sets, read whole into memory from `data_dir`.

The files are read directly (IDX for the MNIST family, pickled batches for CIFAR-10) rather than
through torchvision's Dataset classes, which decode one PIL image per sample and verify checksums of
the full archives; torchvision is used only to download when asked.
"""

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from chainrule.core.errors import DataNotFoundError, unknown_choice
from chainrule.data.base import Arrays, InMemoryDataModule

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SOURCES = {
    # name: (torchvision class, folder under data_dir holding the files)
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array; see http://yann.lecun.com/exdb/mnist/."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _read_mnist(folder: Path) -> tuple[Arrays, Arrays]:
    arrays = {}
    for split, (images, labels) in MNIST_FILES.items():
        paths = [_find(folder, images), _find(folder, labels)]
        if None in paths:
            raise FileNotFoundError(images if paths[0] is None else labels)
        x = torch.from_numpy(read_idx(paths[0]).astype(np.float32) / 255.0).unsqueeze(1)
        arrays[split] = Arrays(x, torch.from_numpy(read_idx(paths[1]).astype(np.int64)))
    return arrays["train"], arrays["test"]


def _read_cifar10(folder: Path) -> tuple[Arrays, Arrays]:
    def batches(names: list[str]) -> Arrays:
        xs, ys = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels"], dtype=np.int64))
        return Arrays(torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0), torch.from_numpy(np.concatenate(ys)))

    return batches([f"data_batch_{i}" for i in range(1, 6)]), batches(["test_batch"])


READERS = {"mnist": _read_mnist, "fashion_mnist": _read_mnist, "cifar10": _read_cifar10}


class VisionDataModule(InMemoryDataModule):
    """MNIST, Fashion-MNIST or CIFAR-10 from `data_dir` in torchvision's layout. The official test set
    is the test split; validation is `val_fraction` of the official training set."""

    num_classes = 10

    def __init__(self, dataset: str, data_dir: str, download: bool, **kwargs):
        if dataset not in SOURCES:
            raise unknown_choice("torchvision dataset", dataset, list(SOURCES))
        super().__init__(test_fraction=0.0, **kwargs)
        self.dataset = dataset
        self.data_dir = Path(data_dir)
        self.download = download

    @property
    def folder(self) -> Path:
        return self.data_dir / SOURCES[self.dataset][1]

    def prepare_data(self) -> None:
        if self.download:
            import torchvision

            dataset_class = getattr(torchvision.datasets, SOURCES[self.dataset][0])
            for train in (True, False):
                dataset_class(str(self.data_dir), train=train, download=True)

    def load(self) -> tuple[Arrays, Arrays]:
        try:
            return READERS[self.dataset](self.folder)
        except FileNotFoundError as missing:
            raise DataNotFoundError(
                f"{self.dataset} not found: expected '{Path(missing.filename or str(missing)).name}' under "
                f"{self.folder}; copy the files there, point paths.data_dir at them, or set "
                f"data.download=true on a machine with network access"
            ) from None
