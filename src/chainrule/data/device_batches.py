"""Batches gathered on the device from a split that lives there: the loader of in-memory data sets with
`data.on_device=true` (chainrule.data.base.InMemoryDataModule).

A DataLoader over tensors in host memory builds each batch sample by sample in Python (a `__getitem__`
and a `torch.stack` per batch) and then copies it to the device, every step. When the whole split fits in
device memory, it is copied there once, and a batch is one `index_select` per tensor on the device, with
the indices of the same order a DataLoader would use (chainrule.data.sampling): the same batches, bit for
bit, without the host in the loop.
"""

from collections.abc import Iterator, Sequence

import torch

from chainrule.data.sampling import GlobalBatchSampler


class DeviceBatches:
    """An iterable of `[x, y]` batches (one per tensor given) gathered from `tensors`, on their device.

    `order` is the training sampler (its `micro_batches()`: one pass per epoch, resumable, reshuffled by
    Lightning's `set_epoch` on `.sampler`) or a fixed list of evaluation index tensors
    (chainrule.data.sampling.eval_index_batches). `len()` is the number of batches of a pass.

    It has no `state_dict`: Lightning would then save and restore it as a stateful loader, while the
    position in the epoch travels with the data module's own state (chainrule.data.resumable).
    """

    #: Lightning looks for `set_epoch` on a loader's `sampler` and `batch_sampler`; there is no batch sampler
    batch_sampler = None

    def __init__(self, tensors: Sequence[torch.Tensor], order: GlobalBatchSampler | list[torch.Tensor]):
        self.tensors = tuple(tensors)
        self.device = self.tensors[0].device
        if isinstance(order, GlobalBatchSampler):
            self.sampler: GlobalBatchSampler | None = order
            self._fixed: list[torch.Tensor] = []
        else:
            self.sampler = None
            # Evaluation batches are the same every pass: their indices are copied to the device once.
            self._fixed = [index.to(self.device) for index in order]

    def __len__(self) -> int:
        return self.sampler.num_micro_batches if self.sampler is not None else len(self._fixed)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        # A generator: the epoch (and a resumed position) is read when the first batch is taken, not when
        # Lightning calls iter() ahead of set_epoch.
        indices = self.sampler.micro_batches(self.device) if self.sampler is not None else self._fixed
        for index in indices:
            yield [tensor.index_select(0, index) for tensor in self.tensors]
