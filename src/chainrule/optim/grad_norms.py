"""Norms of gradients (and parameters) that may be sharded, as one process holding every tensor whole
would compute them.

Under FSDP or tensor parallelism a rank holds only a shard of each tensor (a DTensor), and some shards are
held by several ranks (a tensor replicated over the tensor-parallel ranks, the shards of an FSDP mesh
repeated on each tensor-parallel rank). Each rank adds its shards' squared norms, each weighted by the
share of the world that holds the same shard, and one all-reduce over all ranks gives every rank the same
sums of whole tensors. Plain tensors are whole already: without DTensors nothing is communicated, and
each rank's result is what DDP's identical gradients give on any rank.
"""

import math
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard


def any_sharded(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether any of `tensors` is a DTensor (sharded or replicated over a device mesh)."""
    return any(isinstance(t, DTensor) for t in tensors)


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view: in-place changes reach the DTensor), else the tensor."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def shares(tensors: Sequence[torch.Tensor]) -> list[float]:
    """Each tensor's weight in a world-wide sum of its shards' values (squared norms): (distinct shards of
    it) / world size, so that the ranks holding the same shard together count it once. A plain tensor is
    taken to be whole on every rank."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    weights = []
    for tensor in tensors:
        if isinstance(tensor, DTensor):
            mesh = tensor.device_mesh
            distinct = math.prod(mesh.size(dim) for dim, placement in enumerate(tensor.placements)
                                 if isinstance(placement, Shard))
            weights.append(distinct / world)
        else:
            weights.append(1.0 / world)
    return weights


def sharded_sq_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-tensor squared L2 norms (float32, 1-D, on the first tensor's device) of this rank's shards,
    weighted by `shares`: `all_reduce_sum` of the result gives the whole tensors' squared norms. Call with
    DTensors only where every rank calls it (the sum is a collective)."""
    if not tensors:
        return torch.zeros(0)
    locals_ = [local_part(t) for t in tensors]
    device = locals_[0].device
    norms = torch.stack([n.to(device) for n in torch._foreach_norm(locals_)]).float().square()
    weights = shares(tensors)
    if any(w != 1.0 for w in weights):
        norms = norms * torch.tensor(weights, device=device, dtype=norms.dtype)
    return norms


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum `values` over all ranks in place (nothing in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def total_norm(tensors: Sequence[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor:
    """The norm of all `tensors` together, as one vector (torch.nn.utils.get_total_norm), the same on every
    rank. With DTensors among them every rank must call it: the shards' contributions are all-reduced."""
    tensors = [t for t in tensors if t is not None]
    if not any_sharded(tensors):
        return torch.nn.utils.get_total_norm(tensors, norm_type, error_if_nonfinite=False)
    if norm_type == math.inf:
        largest = torch.stack([local_part(t).detach().abs().max() if local_part(t).numel() else
                               torch.zeros((), device=local_part(t).device) for t in tensors]).max().float()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return largest
    if norm_type != 2.0:
        raise ValueError(f"norms of sharded tensors: only the L2 and inf norms, got {norm_type}")
    return all_reduce_sum(sharded_sq_norms([t.detach() for t in tensors]).sum()).sqrt()


# The total gradient norm of the current optimizer step, computed once: the non-finite guard needs it
# before the update and norm clipping right after, with the gradients unchanged in between. The key is
# the step and each gradient's identity and version (an in-place change bumps it); no tensor is kept.
_step_norm: tuple[tuple, torch.Tensor] | None = None


def step_total_norm(grads: Sequence[torch.Tensor], step: int) -> torch.Tensor:
    """`total_norm(grads)` (L2), computed once for the same gradients in optimizer step `step`."""
    global _step_norm
    key = (step, tuple((id(g), g._version) for g in grads))  # in order: a sum's rounding depends on it
    if _step_norm is None or _step_norm[0] != key:
        _step_norm = (key, total_norm(grads))
    return _step_norm[1]


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float, foreach: bool | None = None,
                    step: int | None = None) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (L2), also for sharded gradients: the clipping factor comes from the
    global norm over all shards, so every rank scales its shards alike, as one process would scale the whole
    gradient. With `step` (the optimizer step), a norm of the same gradients computed already in that step
    (`step_total_norm`) is reused. Returns the norm before clipping."""
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = total_norm(grads) if step is None else step_total_norm(grads, step)
    if not any_sharded(grads):
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm, foreach=foreach)
        return norm
    coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # the same formula as torch's
    locals_ = [local_part(g) for g in grads]
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in locals_:
        by_device.setdefault(g.device, []).append(g)
    for device, group in by_device.items():
        torch._foreach_mul_(group, coefficient.to(device))
    return norm
