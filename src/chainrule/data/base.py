from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from chainrule.core.errors import ConfigError
from chainrule.data.resumable import is_position, training_position
from chainrule.data.sampling import GlobalBatchSampler, eval_batches


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


class InMemoryDataModule(L.LightningDataModule):
    """A dataset small enough to hold as tensors, split into train/val/test from `split_seed`.

    Subclasses implement `load()`. `batch_size` is the global batch per optimizer step; each process
    loads batch_size / (world size x gradient accumulation) samples per step, and the samples of one
    step are the same whatever the number of processes (see chainrule.data.sampling).
    """

    def __init__(
        self,
        batch_size: int,
        val_fraction: float,
        test_fraction: float,
        split_seed: int,
        num_workers: int,
    ):
        super().__init__()
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(f"data.val_fraction + data.test_fraction must leave training data, got "
                              f"{val_fraction} + {test_fraction}")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.num_workers = num_workers
        self._splits: Splits | None = None
        self._resume_position: dict[str, int] | None = None
        self._train_sampler: GlobalBatchSampler | None = None  # this fit's, once its loader exists

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
            order = torch.randperm(len(train), generator=generator)
            n_val = round(self.val_fraction * len(train))
            return Splits(train.subset(order[n_val:]), train.subset(order[:n_val]), test)
        order = torch.randperm(len(data), generator=generator)
        n_val, n_test = round(self.val_fraction * len(data)), round(self.test_fraction * len(data))
        return Splits(
            train=data.subset(order[n_val + n_test:]),
            val=data.subset(order[:n_val]),
            test=data.subset(order[n_val:n_val + n_test]),
        )

    def setup(self, stage: str | None = None) -> None:
        _ = self.splits
        self._train_sampler = None  # a new fit builds its own loader

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

    def train_dataloader(self) -> DataLoader:
        world, rank, accumulation = self._world()
        sampler = GlobalBatchSampler(len(self.splits.train), self.batch_size, world, rank, accumulation,
                                     shuffle=True, seed=self.split_seed)
        if self._resume_position is not None:
            sampler.resume_at(self._resume_position)
            self._resume_position = None
        self._train_sampler = sampler
        return self._loader(self.splits.train, batch_size=sampler.micro_batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.splits.val)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.splits.test)

    def _eval_loader(self, arrays: Arrays) -> DataLoader:
        world, rank, _ = self._world()
        batches = eval_batches(len(arrays), max(1, self.batch_size // world), world, rank)
        return self._loader(arrays, batch_sampler=batches)

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

    def _loader(self, arrays: Arrays, **batching) -> DataLoader:
        # The samplers above shard by rank themselves; trainer.use_distributed_sampler is off for that.
        return DataLoader(
            TensorDataset(arrays.x, arrays.y),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # A private generator: starting an epoch then leaves the global RNG (dropout masks) untouched.
            generator=torch.Generator().manual_seed(self.split_seed),
            **batching,
        )
