"""How a data module's loaders run: how many worker processes per rank, whether they outlive an epoch,
pinned memory, and how many batches each worker prepares ahead; one rule for every data module."""

from dataclasses import dataclass
from typing import Any

from chainrule.core.errors import ConfigError


@dataclass(frozen=True)
class LoaderOptions:
    """`num_workers` processes per rank load batches (0: the training process itself); with
    `persistent_workers` they are started once per fit instead of once per epoch; `pin_memory` puts
    batches in page-locked memory, which speeds the copy to a GPU (ignored off the GPU); each worker keeps
    `prefetch_factor` batches ready."""

    num_workers: int
    persistent_workers: bool
    pin_memory: bool
    prefetch_factor: int

    def __post_init__(self) -> None:
        workers = self.num_workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigError(f"data.num_workers must be an integer >= 0 (0 loads in the training process), "
                              f"got {self.num_workers!r}")
        if isinstance(self.prefetch_factor, bool) or not isinstance(self.prefetch_factor, int) \
                or self.prefetch_factor < 1:
            raise ConfigError(f"data.prefetch_factor must be an integer >= 1 (batches each worker keeps "
                              f"ready), got {self.prefetch_factor!r}")

    def dataloader_kwargs(self, on_gpu: bool) -> dict[str, Any]:
        """Keyword arguments of torch's DataLoader (and LitData's StreamingDataLoader). torch refuses
        persistent workers and a prefetch factor without workers, so those apply only with workers."""
        kwargs: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.pin_memory and on_gpu}
        if self.num_workers > 0:
            kwargs.update(persistent_workers=self.persistent_workers, prefetch_factor=self.prefetch_factor)
        return kwargs
