"""Tiny files in the exact on-disk formats of MNIST (IDX) and CIFAR-10 (pickled batches)."""

import gzip
import pickle
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist(folder: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> None:
    """MNIST-style raw files; labels are 0-9, image brightness encodes the label (learnable)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, compress in (("train", n_train, True), ("t10k", n_test, False)):
        labels = rng.integers(0, 10, n)
        images = (labels[:, None, None] * 25 + rng.integers(0, 5, (n, 28, 28))).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)


def write_cifar10(folder: Path, per_batch: int = 16, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32)).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)


def populate(data_dir: Path) -> None:
    """All torchvision-layout data sets that conf/data/ can read from a data_dir."""
    write_mnist(data_dir / "MNIST" / "raw")
    write_mnist(data_dir / "FashionMNIST" / "raw", seed=1)
    write_cifar10(data_dir / "cifar-10-batches-py")
