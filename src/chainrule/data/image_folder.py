"""Images in class folders on disk (torchvision's ImageFolder layout), decoded in the loader's workers.

    data_dir/train/<class>/<image>     train/, and optionally val/ and test/ beside it, or
    data_dir/<class>/<image>           one folder, split into train/val/test by fractions

Training batches follow chainrule's global-batch order, and each training image's augmentation is drawn
from a seed of (seed, epoch, image index) (chainrule.data.draws), so a run on N processes with any number
of workers trains as one process does, and a resumed run as an uninterrupted one.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from chainrule.core.errors import ConfigError, DataNotFoundError
from chainrule.data.draws import seeded, split_key
from chainrule.data.indexed import SPLITS, IndexedDataModule

# What torchvision.io.decode_image reads.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
MODES = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}

Files = list[tuple[str, int]]


class ImageFiles(Dataset):
    """(image, class) pairs from files: decoded as uint8 (C, H, W), transformed, then float32 in [0, 1]
    (normalized when `mean`/`std` are given). A key with a draw seed transforms under that seed."""

    def __init__(self, files: Files, transform: Callable, channels: int, mean: Sequence[float] | None,
                 std: Sequence[float] | None):
        self.files = files
        self.transform = transform
        self.mode = MODES[channels]
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = split_key(key)
        path, label = self.files[index]
        image = decode_image(path, mode=self.mode, apply_exif_orientation=True)
        if seed is None:
            image = self.transform(image)
        else:
            with seeded(seed):
                image = self.transform(image)
        x = F.to_dtype(image, torch.float32, scale=True)
        if self.mean is not None:
            x = F.normalize(x, self.mean, self.std)
        return x, label


def _files(folder: Path, class_to_idx: dict[str, int], required: bool) -> Files:
    try:
        return make_dataset(str(folder), class_to_idx, EXTENSIONS, allow_empty=not required)
    except FileNotFoundError as error:
        raise DataNotFoundError(f"{folder}: {error}; every class folder needs at least one image "
                                f"({', '.join(EXTENSIONS)})") from None


def discover(data_dir: Path, val_fraction: float, test_fraction: float,
             seed: int) -> tuple[list[str], dict[str, Files]]:
    """The class names and each split's files. With `data_dir/train/`, the classes are its folders and
    `val/`, `test/` beside it are used when present; a missing split (or all three, for a folder of class
    folders) takes its fraction of the training files, drawn with `seed`."""
    if not data_dir.is_dir():
        raise DataNotFoundError(f"no image folder at {data_dir}: put one folder of images per class there "
                                f"(or train/, val/, test/ folders of them), or point data.data_dir at yours")
    root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError:
        raise DataNotFoundError(f"{root} has no class folders: put the images of each class in a folder "
                                f"named after it") from None
    pool = _files(root, class_to_idx, required=True)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    splits: dict[str, Files] = {}
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        folder = data_dir / split
        if root != data_dir and folder.is_dir():
            splits[split] = _files(folder, class_to_idx, required=False)
        else:
            taken, order = order[:round(fraction * len(pool))], order[round(fraction * len(pool)):]
            splits[split] = [pool[i] for i in sorted(taken)]
    splits["train"] = [pool[i] for i in sorted(order)]
    return classes, splits


class ImageFolderDataModule(IndexedDataModule):
    """Classification on image files (see the module's docstring for the layouts). `train_transform`
    (augmentation) and `eval_transform` (resize, crop) are torchvision transforms v2 applied to uint8
    (C, H, W) tensors and must give `channels` x `image_size` x `image_size` images; `val_fraction` and
    `test_fraction` apply to the splits that have no folder of their own."""

    seeded_samples = True

    def __init__(
        self,
        data_dir: str,
        image_size: int,
        channels: int,
        train_transform: Callable,
        eval_transform: Callable,
        mean: list[float] | None,
        std: list[float] | None,
        val_fraction: float,
        test_fraction: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if channels not in MODES:
            raise ConfigError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        if (mean is None) != (std is None) or (mean is not None and not len(mean) == len(std) == channels):
            raise ConfigError(f"data.mean and data.std must both be null or both list {channels} values "
                              f"(one per channel), got {mean!r} and {std!r}")
        self.data_dir = Path(data_dir)
        self.image_size = image_size
        self.channels = channels
        self.transforms = {"train": train_transform, "val": eval_transform, "test": eval_transform}
        self.mean, self.std = mean, std
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self._files: dict[str, Files] | None = None
        self.classes: list[str] = []

    @property
    def files(self) -> dict[str, Files]:
        if self._files is None:
            self.classes, self._files = discover(self.data_dir, self.val_fraction, self.test_fraction,
                                                 self.split_seed)
        return self._files

    @property
    def num_classes(self) -> int:
        _ = self.files
        return len(self.classes)

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    def split_dataset(self, split: str) -> ImageFiles:
        return ImageFiles(self.files[split], self.transforms[split], self.channels, self.mean, self.std)

    def setup(self, stage: str | None = None) -> None:
        """Check on one image that both transforms give the input shape the model is built for."""
        for split in SPLITS:
            dataset = self.split_dataset(split)
            if len(dataset) == 0:
                continue
            shape = tuple(dataset[(0, 0) if split == "train" else 0][0].shape)
            if shape != self.input_shape:
                which = "train_transform" if split == "train" else "eval_transform"
                raise ConfigError(f"data.{which} makes {'x'.join(map(str, shape))} images of "
                                  f"{dataset.files[0][0]}, but data.image_size={self.image_size} and "
                                  f"data.channels={self.channels} ask for "
                                  f"{'x'.join(map(str, self.input_shape))}; end the transforms with a "
                                  f"crop or resize to data.image_size")
            if split == "val":
                break
