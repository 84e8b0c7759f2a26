"""The base of data modules whose samples are numbered (map-style datasets): samples in memory, image
files, windows of a token file. It owns their loaders: the training order by global batch
(chainrule.data.sampling), each sample's random draws from (seed, epoch, index) (chainrule.data.draws),
the position in the epoch in every checkpoint (chainrule.data.resumable), the worker settings
(chainrule.data.loading), and batches gathered on the device from tensors kept there
(chainrule.data.device_batches) for the data modules that offer them."""

from collections.abc import Iterable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from chainrule.data.device_batches import DeviceBatches
from chainrule.data.draws import SeededSampler
from chainrule.data.loading import LoaderOptions
from chainrule.data.resumable import is_position, training_position
from chainrule.data.sampling import GlobalBatchSampler, eval_index_batches

SPLITS = ("train", "val", "test")


class IndexedDataModule(L.LightningDataModule):
    """Subclasses implement `split_dataset(split)` for `train`, `val` and `test`.

    `batch_size` is the global batch per optimizer step; each process loads batch_size / (world size x
    gradient accumulation) samples per step, and the samples of one step are the same whatever the
    number of processes. When `seeded_samples` is true, the training dataset is indexed with `(index,
    draw seed)` pairs (chainrule.data.draws.SeededSampler) and makes its random draws from that seed;
    evaluation datasets always get plain indices.
    """

    #: the training dataset takes (index, draw seed) keys: it draws random numbers per sample
    seeded_samples: bool = False

    def __init__(
        self,
        batch_size: int,
        split_seed: int,
        num_workers: int,
        persistent_workers: bool,
        pin_memory: bool,
        prefetch_factor: int,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.split_seed = split_seed
        self.loading = LoaderOptions(num_workers, persistent_workers, pin_memory, prefetch_factor)
        self._resume_position: dict[str, int] | None = None
        self._train_sampler: GlobalBatchSampler | None = None  # this fit's, once its loader exists

    def setup(self, stage: str | None = None) -> None:
        self._train_sampler = None  # a new fit builds its own loader

    @property
    def num_workers(self) -> int:
        return self.loading.num_workers

    # --- what subclasses provide -------------------------------------------------------------------
    def split_dataset(self, split: str) -> Dataset:
        """The map-style dataset of `split` (train, val or test); its length is its number of samples."""
        raise NotImplementedError

    def split_sizes(self) -> dict[str, int]:
        """Samples in each split, for the run's header."""
        return {split: len(self.split_dataset(split)) for split in SPLITS}

    def device_tensors(self, split: str) -> tuple[torch.Tensor, ...] | None:
        """The tensors of `split` (inputs, targets) on the training device, when its batches are gathered
        there instead of loaded by a DataLoader (chainrule.data.base.InMemoryDataModule with `on_device`);
        None: a DataLoader loads them."""
        return None

    # --- loaders ----------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int, int]:
        """(data-parallel world size, this process's rank in it, gradient accumulation) of the attached
        trainer. The data-parallel world is every process, except under tensor parallelism, where the ranks
        of one tensor-parallel group share their samples (Lightning's distributed_sampler_kwargs)."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0, 1
        shards = trainer.distributed_sampler_kwargs or {"num_replicas": trainer.world_size,
                                                        "rank": trainer.global_rank}
        return shards["num_replicas"], shards["rank"], trainer.accumulate_grad_batches

    def train_dataloader(self) -> Iterable:
        world, rank, accumulation = self._world()
        dataset = self.split_dataset("train")
        # debug=overfit_batch (Lightning's overfit_batches) trains on the same first batches every epoch.
        # Lightning swaps a DataLoader's sampler for a sequential one itself; device batches it cannot reach.
        overfitting = self.trainer is not None and bool(self.trainer.overfit_batches)
        sampler = GlobalBatchSampler(len(dataset), self.batch_size, world, rank, accumulation,
                                     shuffle=not overfitting, seed=self.split_seed)
        if self._resume_position is not None:
            sampler.resume_at(self._resume_position)
            self._resume_position = None
        self._train_sampler = sampler
        tensors = self.device_tensors("train")
        if tensors is not None:
            return DeviceBatches(tensors, sampler)
        if self.seeded_samples:
            sampler = SeededSampler(sampler, self.split_seed)
        return self._loader(dataset, batch_size=sampler.micro_batch_size, sampler=sampler)

    def val_dataloader(self) -> Iterable:
        return self._eval_loader("val")

    def test_dataloader(self) -> Iterable:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> Iterable:
        world, rank, _ = self._world()
        dataset = self.split_dataset(split)
        batches = eval_index_batches(len(dataset), max(1, self.batch_size // world), world, rank)
        tensors = self.device_tensors(split)
        if tensors is not None:
            return DeviceBatches(tensors, batches)
        return self._loader(dataset, batch_sampler=[batch.tolist() for batch in batches])

    def _device(self) -> torch.device:
        """The attached trainer's device (the CPU without a trainer)."""
        trainer = self.trainer
        return torch.device("cpu") if trainer is None else trainer.strategy.root_device

    def _on_gpu(self) -> bool:
        return self._device().type == "cuda"

    def _loader(self, dataset: Dataset, **batching) -> DataLoader:
        # The samplers above shard by rank themselves; trainer.use_distributed_sampler is off for that.
        return DataLoader(
            dataset,
            **self.loading.dataloader_kwargs(self._on_gpu()),
            # A private generator: starting an epoch then leaves the global RNG (dropout masks) untouched.
            generator=torch.Generator().manual_seed(self.split_seed),
            **batching,
        )

    # --- resuming: the position in the training order travels in every checkpoint --------------------
    def state_dict(self) -> dict[str, int]:
        return training_position(self.trainer)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        position = state_dict if is_position(state_dict) else None
        if position is not None and self._train_sampler is not None:
            # Strategies that restore after their setup (trainer=fsdp) built the loader before (to count the
            # steps for the LR schedule); its sampler has not been iterated yet.
            self._train_sampler.resume_at(position)
        else:
            self._resume_position = position
