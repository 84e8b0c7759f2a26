"""Sharding a model over a device mesh: tensor parallelism, activation checkpointing and fully sharded
data parallelism (FSDP2), applied by plain functions in a fixed order (`parallelize`).

The model declares what to shard (chainrule.models.sharding: its FSDP units and its tensor-parallel
plan); the strategy (chainrule.training.sharded_strategy, `trainer=fsdp`) owns the mesh and the options;
the Task calls `parallelize` from Lightning's `configure_model` hook.
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from chainrule.core.errors import ConfigError
from chainrule.models.sharding import COLWISE, sharding_units, tensor_parallel_plan

DATA_PARALLEL = "data_parallel"  # the mesh's dimension names, as Lightning's ModelParallelStrategy builds it
TENSOR_PARALLEL = "tensor_parallel"
PARAM_DTYPES = {"bf16": torch.bfloat16}


def parallelize(model: nn.Module, mesh: DeviceMesh, mixed_precision: str | None,
                activation_checkpointing: bool, cpu_offload: bool, reshard_after_forward: bool) -> None:
    """Shard `model` in place over `mesh` (dimensions data_parallel x tensor_parallel). Every rank calls it.

    The order matters:
    1. Tensor parallelism first: it turns the planned layers' weights into DTensors split over the
       tensor-parallel dimension, rows or columns. FSDP then shards those DTensors once more over the
       data-parallel dimension (2-D); the other way round, TP would find flat FSDP shards it cannot split.
    2. Activation checkpointing on the FSDP units, before FSDP wraps them: a unit's recomputation in the
       backward pass then runs while FSDP has its parameters gathered for that unit's backward anyway.
    3. FSDP last, the units before the root: each unit becomes one all-gather/reduce-scatter group; the
       root takes the parameters no unit claimed (embeddings, tied heads), which must stay in one group.
    """
    if mesh[TENSOR_PARALLEL].size() > 1:
        apply_tp(model, mesh[TENSOR_PARALLEL])
    units = sharding_units(model)
    if activation_checkpointing:
        apply_activation_checkpointing(units)
    apply_fsdp(model, mesh[DATA_PARALLEL], units, mixed_precision, cpu_offload, reshard_after_forward)


def is_parallelized(model: nn.Module) -> bool:
    """Whether `parallelize` has run on `model` (Lightning calls configure_model again for each stage)."""
    return isinstance(model, FSDPModule)


def apply_tp(model: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Split the layers of the model's tensor-parallel plan over `tp_mesh`: colwise layers by output
    features, rowwise layers by input features (their partial outputs are summed). Inputs and outputs of
    the plan's layer pairs stay whole (replicated), so the rest of the model runs unchanged."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = tensor_parallel_plan(model)
    size = tp_mesh.size()
    for path, style in plan.items():
        layer = model.get_submodule(path)
        features = layer.out_features if style == COLWISE else layer.in_features
        if features % size:
            kind = "output" if style == COLWISE else "input"
            raise ConfigError(f"trainer.strategy.tensor_parallel_size={size} does not divide the {features} "
                              f"{kind} features of {path}; use a size that divides the model's widths (and, "
                              f"for attention, its number of heads)")
    parallelize_module(model, tp_mesh, {path: ColwiseParallel() if style == COLWISE else RowwiseParallel()
                                        for path, style in plan.items()})


def apply_activation_checkpointing(units: Sequence[nn.Module]) -> None:
    """Keep only each unit's inputs during the forward pass and recompute its activations in the backward
    pass: activation memory of one unit at a time, for about a third more compute. The composable API adds
    hooks and no wrapper, so module and parameter names (and checkpoints) stay the same."""
    from torch.distributed._composable import checkpoint

    for unit in units:
        checkpoint(unit)


def apply_fsdp(model: nn.Module, dp_mesh: DeviceMesh, units: Sequence[nn.Module], mixed_precision: str | None,
               cpu_offload: bool, reshard_after_forward: bool) -> None:
    """Shard parameters, gradients and optimizer state over `dp_mesh`, one all-gather group per unit.

    mixed_precision `bf16`: parameters are gathered and computed with in bf16 while the sharded parameters,
    the optimizer and the gradient reduction stay in fp32 (reduce-scatter in fp32 keeps the sum over ranks
    exact to fp32). The model's output comes back in fp32, so the loss is computed in fp32.
    cpu_offload: sharded parameters, gradients and optimizer state live in CPU memory (GPU only).
    reshard_after_forward: free each unit's gathered parameters after its forward (gather again for the
    backward): less memory, one more all-gather per unit.
    """
    if mixed_precision is None:
        unit_policy = root_policy = MixedPrecisionPolicy()
    else:
        dtype = PARAM_DTYPES[mixed_precision]
        unit_policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        root_policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32,
                                           output_dtype=torch.float32)
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for unit in units:
        fully_shard(unit, mesh=dp_mesh, mp_policy=unit_policy, offload_policy=offload,
                    reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=dp_mesh, mp_policy=root_policy, offload_policy=offload,
                reshard_after_forward=reshard_after_forward)
