"""How a model declares its parallelisation, as plain data: which submodules fully sharded data parallelism
(FSDP) shards as units, and which layers tensor parallelism (TP) splits. Nothing here imports
torch.distributed; chainrule.training.parallelize applies the declarations.

- `sharding_units()`: the submodules FSDP gathers one at a time (all-gathered just before their forward,
  freed after it), typically the repeated blocks. The rest of the model (embeddings, heads) goes into the
  root unit. A model declares them with a `sharding_units()` method; torchvision models, which chainrule
  does not define, get theirs from their family's stage names below.
- `tensor_parallel_plan()`: {module path: "colwise" | "rowwise"}. A column-parallel linear layer splits
  its output features over the tensor-parallel ranks, a row-parallel one its input features (then sums
  the partial outputs), so a colwise layer followed by a rowwise one exchanges data once. Only models that
  declare a plan can use `trainer.strategy.tensor_parallel_size` > 1.
"""

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from torch import nn

from chainrule.core.errors import ConfigError

COLWISE = "colwise"
ROWWISE = "rowwise"
STYLES = (COLWISE, ROWWISE)

# torchvision builds these models; their repeated stages by family (ResNet/ResNeXt/Wide ResNet: layer1-4;
# VGG, MobileNet, EfficientNet, ConvNeXt, DenseNet, Swin: the children of `features`; ViT: the encoder's
# layers; RegNet: the trunk's blocks).
TORCHVISION_STAGES = ("layer1", "layer2", "layer3", "layer4")
TORCHVISION_CONTAINERS = ("features", "encoder.layers", "trunk_output")


@runtime_checkable
class Shardable(Protocol):
    def sharding_units(self) -> Sequence[nn.Module]: ...


@runtime_checkable
class TensorParallelizable(Protocol):
    def tensor_parallel_plan(self) -> Mapping[str, str]: ...


def sharding_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP shards as units, in forward order; raises ConfigError for a model that declares
    none (FSDP of the whole model as one unit saves no memory while it runs)."""
    if isinstance(model, Shardable):
        return list(model.sharding_units())
    if all(hasattr(model, name) for name in TORCHVISION_STAGES):
        return [getattr(model, name) for name in TORCHVISION_STAGES]
    for path in TORCHVISION_CONTAINERS:
        try:
            container = model.get_submodule(path)
        except AttributeError:
            continue
        units = [child for child in container.children() if any(True for _ in child.parameters())]
        if units:
            return units
    raise ConfigError(f"{type(model).__name__} declares no sharding units for FSDP; give it a "
                      f"sharding_units() method returning its repeated blocks "
                      f"(chainrule.models.sharding), or train it with trainer=ddp")


def tensor_parallel_plan(model: nn.Module) -> dict[str, str]:
    """{module path: colwise | rowwise} as the model declares it; raises ConfigError for a model without a
    plan or with a style that does not exist."""
    if not isinstance(model, TensorParallelizable):
        raise ConfigError(f"{type(model).__name__} declares no tensor-parallel plan; use "
                          f"trainer.strategy.tensor_parallel_size=1 (FSDP alone), or a model that has one "
                          f"(model=gpt)")
    plan = dict(model.tensor_parallel_plan())
    wrong = {path: style for path, style in plan.items() if style not in STYLES}
    if wrong:
        raise ConfigError(f"{type(model).__name__}.tensor_parallel_plan(): unknown styles {wrong}; use "
                          f"one of {', '.join(STYLES)}")
    return plan
