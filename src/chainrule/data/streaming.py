"""Data in shards written by LitData (`litdata.optimize`), streamed from a local folder or an object store
(s3://, gs://, ... through LitData's own clients) with LitData's StreamingDataset and StreamingDataLoader.

    <input_dir>/train, <input_dir>/val, <input_dir>/test    one LitData dataset each (test: optional)

Each item is a dict `{"x": input, "y": target}`: an input tensor of any shape (uint8 inputs are images,
scaled to float32 in [0, 1]; other integer inputs, token ids, stay as they are) and a class id or a
tensor of regression targets. `chainrule-prepare shards` writes such shards from an image folder.

Ordering under DDP (LitData's, not chainrule's global-batch order): each epoch LitData shuffles the
chunks with (seed, epoch), deals them to ranks and, within a rank, to loader workers, and shuffles the
items within each chunk. Over all ranks every item is trained on exactly once per epoch (up to the few
items LitData drops so that every rank gets as many batches as the others), but which items form one
optimizer step depends on the number of ranks, workers and the batch size: N processes see the same
samples each epoch as one process, in another order, so their weights are not equal to one process's.
For a given (seed, ranks, workers, batch size) the order is fixed, and LitData's loader state, saved in
every checkpoint, resumes mid-epoch exactly where the run stopped. Evaluation reads items
by index instead (chainrule.data.sampling.eval_batches): each item once, the same number of batches on
every rank.
"""

import functools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from chainrule.core import console
from chainrule.core.errors import ConfigError, DataNotFoundError
from chainrule.data.batching import per_device_batch_size
from chainrule.data.loading import LoaderOptions
from chainrule.data.resumable import is_position, training_position
from chainrule.data.sampling import eval_batches

SPLITS = ("train", "val", "test")


def split_dir(input_dir: str, split: str) -> str:
    """A split's folder under `input_dir`, a local path or a URL."""
    return f"{input_dir.rstrip('/')}/{split}"


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("local:")


def to_input(x: Any) -> torch.Tensor:
    """An item's input as the model takes it: uint8 images scaled to float32 in [0, 1]."""
    x = torch.as_tensor(x)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def collate(items: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a batch of items."""
    x = torch.stack([to_input(item["x"]) for item in items])
    y = torch.stack([torch.as_tensor(item["y"]) for item in items])
    return x, y


class ByIndex(Dataset):
    """A StreamingDataset read by item index (every item of the split, whatever the world size)."""

    def __init__(self, streaming: Any):
        self.streaming = streaming
        # Counted from the index LitData read when it opened the dataset, without reading an item here:
        # a reader of the training process keeps a thread, and worker processes forked later would wait
        # on its locks when they exit.
        self.length = sum(end - start for start, end in streaming.region_of_interest)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.streaming[index]


class StatesAfterBatches:
    """LitData's loader, remembering its state after each of the last few batches it handed out.

    A checkpoint is written between batches, when Lightning may already have fetched the next batch,
    which LitData's state then counts as seen; the state after the batches actually trained on is among
    the remembered ones. The loader's own state_dict is not exposed: Lightning would save that one."""

    KEEP = 4

    def __init__(self, loader: Any, epoch: Callable[[], int]):
        self.loader = loader
        self.epoch = epoch
        self.states: deque[tuple[tuple[int, int], dict[str, Any]]] = deque(maxlen=self.KEEP)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch()
        for batches, batch in enumerate(self.loader, start=1):
            self.states.append(((epoch, batches), self.loader.state_dict()))
            yield batch

    def state_after(self, epoch: int, batches: int) -> dict[str, Any]:
        for key, state in reversed(self.states):
            if key == (epoch, batches):
                return state
        console.warn(f"the streaming loader's state after batch {batches} of epoch {epoch} is gone; the "
                     f"checkpoint holds its newest state, which may skip a batch on resume")
        return self.loader.state_dict()


class StreamingDataModule(L.LightningDataModule):
    """LitData shards (see the module's docstring): `input_dir` holds train/, val/ and optionally test/.
    `num_classes`: classes of the targets, or null for regression targets. `cache_dir`: where shards
    streamed from an object store are kept (null: LitData's default, ~/.lightning/chunks)."""

    def __init__(
        self,
        input_dir: str,
        num_classes: int | None,
        cache_dir: str | None,
        batch_size: int,
        split_seed: int,
        num_workers: int,
        persistent_workers: bool,
        pin_memory: bool,
        prefetch_factor: int,
    ):
        super().__init__()
        self.input_dir = str(input_dir)
        self.num_classes = num_classes
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.split_seed = split_seed
        self.loading = LoaderOptions(num_workers, persistent_workers, pin_memory, prefetch_factor)
        self._first: dict[str, Any] | None = None
        self._stream: StatesAfterBatches | None = None
        self._resume: dict[str, Any] | None = None

    def _dataset(self, split: str, shuffle: bool) -> Any:
        from litdata import StreamingDataset

        path = split_dir(self.input_dir, split)
        if _is_local(path) and not (Path(path.removeprefix("local:")) / "index.json").is_file():
            if split == "test":
                return None
            raise DataNotFoundError(f"no LitData shards at {path} (index.json is missing): write them with "
                                    f"`chainrule-prepare shards <image folder> --output {self.input_dir}` or "
                                    f"litdata.optimize, or point data.input_dir at yours")
        # Training drops the last items that would make a rank's batches uneven (LitData's drop_last);
        # evaluation reads by index, where it does not apply.
        return StreamingDataset(path, cache_dir=self.cache_dir, shuffle=shuffle, seed=self.split_seed,
                                drop_last=True if shuffle else None)

    # --- derived ----------------------------------------------------------------------------------
    @property
    def first_item(self) -> dict[str, Any]:
        if self._first is None:
            self._first = self._dataset("train", shuffle=False)[0]
        return self._first

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(to_input(self.first_item["x"]).shape)

    @property
    def num_outputs(self) -> int:
        if self.num_classes is not None:
            return self.num_classes
        y = torch.as_tensor(self.first_item["y"])
        return 1 if y.ndim == 0 else y.shape[-1]

    def split_sizes(self) -> dict[str, int]:
        return {split: len(self._by_index(split)) for split in SPLITS}

    # --- loaders ----------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0, 1
        return trainer.world_size, trainer.global_rank, trainer.accumulate_grad_batches

    def _on_gpu(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> StatesAfterBatches:
        """LitData's loader, in LitData's order; each rank loads its per-device share of the global batch.
        A resumed run restores LitData's state after the last batch trained on."""
        from litdata import StreamingDataLoader

        world, _, accumulation = self._world()
        micro = per_device_batch_size(self.batch_size, world, accumulation)
        dataset = self._dataset("train", shuffle=True)
        loader = StreamingDataLoader(dataset, batch_size=micro, collate_fn=collate,
                                     **self.loading.dataloader_kwargs(self._on_gpu()))
        if len(loader) == 0:
            raise ConfigError(f"data.batch_size={self.batch_size} (global) leaves no full batch of the "
                              f"{split_dir(self.input_dir, 'train')} shards per rank and worker; use a "
                              f"smaller data.batch_size or fewer data.num_workers")
        resume, self._resume = self._resume, None
        if resume is not None and "loader" in resume:
            loader.load_state_dict(resume["loader"])
        elif resume is not None:
            # Between epochs: LitData counts its epochs from 1 and starts the next one at each pass.
            loader.current_epoch = resume["epoch"]
        self._stream = StatesAfterBatches(loader, epoch=self._epoch)
        return self._stream

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    # --- resuming: LitData's state after the last batch trained on travels in every checkpoint --------
    def state_dict(self) -> dict[str, Any]:
        position = training_position(self.trainer)
        if not position or self._stream is None:
            return {}
        if position["batches"] == 0:
            return position
        return {**position, "loader": self._stream.state_after(position["epoch"], position["batches"])}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = state_dict if is_position(state_dict) else None

    def _by_index(self, split: str) -> ByIndex | list:
        dataset = self._dataset(split, shuffle=False)
        return ByIndex(dataset) if dataset is not None else []

    def _eval_loader(self, split: str) -> DataLoader:
        world, rank, _ = self._world()
        dataset = self._by_index(split)
        batches = eval_batches(len(dataset), max(1, self.batch_size // world), world, rank)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                          **self.loading.dataloader_kwargs(self._on_gpu()))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def _image_item(file: tuple[str, int], image_size: int, channels: int) -> dict[str, Any]:
    """One image file as a shard item: resized, center-cropped uint8 (C, S, S) and its class id."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as F

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    image = decode_image(file[0], mode=mode, apply_exif_orientation=True)
    image = F.center_crop(F.resize(image, [image_size], antialias=True), [image_size, image_size])
    return {"x": image.contiguous(), "y": file[1]}


def write_shards(fn: Callable[[Any], dict[str, Any]], inputs: dict[str, list], output: str,
                 chunk_bytes: str | None, chunk_size: int | None, num_workers: int,
                 start_method: str | None) -> None:
    """`litdata.optimize` of `fn` over each split's inputs into `output`/<split> (a folder or an object-store
    URL): one LitData dataset per split. `start_method` of LitData's worker processes: None for LitData's
    choice (spawn), or fork (faster to start, for `fn`s that need no fresh interpreter)."""
    from litdata import optimize

    # optimize sets the start method of the whole process (force=True); every DataLoader started later
    # in this process would then spawn its workers (a fresh interpreter each): put it back.
    saved = multiprocessing.get_start_method(allow_none=True)
    try:
        for split, items in inputs.items():
            if items:
                optimize(fn=fn, inputs=items, output_dir=split_dir(output, split), chunk_bytes=chunk_bytes,
                         chunk_size=chunk_size, num_workers=num_workers, mode="overwrite", verbose=False,
                         start_method=start_method)
    finally:
        multiprocessing.set_start_method(saved, force=True)


def write_image_shards(splits: dict[str, list[tuple[str, int]]], output: str, image_size: int, channels: int,
                       chunk_bytes: str, num_workers: int, start_method: str | None) -> None:
    """Each split's image files as LitData shards under `output`/<split> (a folder or an object-store URL),
    resized and center-cropped to `image_size` (`start_method`: see write_shards)."""
    fn = functools.partial(_image_item, image_size=image_size, channels=channels)
    write_shards(fn, splits, output, chunk_bytes=chunk_bytes, chunk_size=None, num_workers=num_workers,
                 start_method=start_method)
