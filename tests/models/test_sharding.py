"""What models declare for sharding (chainrule.models.sharding): FSDP units for every family, GPT's
tensor-parallel plan, and GPT's split attention projections reading checkpoints of the fused one."""

import pytest
import torch
import torchvision
from torch import nn

from chainrule.core.errors import ConfigError
from chainrule.models.gpt import GPT
from chainrule.models.sharding import COLWISE, ROWWISE, sharding_units, tensor_parallel_plan


def tiny_gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT((8,), 16, n_layer=2, n_head=4, n_embd=16, dropout=0.0, bias=True)


@pytest.mark.parametrize(("name", "units"), [
    ("resnet18", ["layer1", "layer2", "layer3", "layer4"]),
    ("mobilenet_v2", None),  # the children of `features`
    ("vit_b_16", None),  # the encoder's layers
])
def test_torchvision_models_shard_by_their_stages(name: str, units: list[str] | None) -> None:
    model = torchvision.models.get_model(name, weights=None, num_classes=3)
    found = sharding_units(model)
    if units is not None:
        assert found == [getattr(model, unit) for unit in units]
    else:
        assert len(found) > 3 and all(any(True for _ in unit.parameters()) for unit in found)


def test_a_model_without_units_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="declares no sharding units.*sharding_units()"):
        sharding_units(nn.Sequential(nn.Linear(2, 2)))


def test_gpt_shards_its_blocks_and_splits_attention_and_mlp() -> None:
    model = tiny_gpt(0)
    assert sharding_units(model) == list(model.blocks)
    plan = tensor_parallel_plan(model)
    assert plan["blocks.1.attn.q"] == plan["blocks.1.mlp.0"] == COLWISE
    assert plan["blocks.1.attn.proj"] == plan["blocks.1.mlp.2"] == ROWWISE
    assert all(isinstance(model.get_submodule(path), nn.Linear) for path in plan)
    with pytest.raises(ConfigError, match="no tensor-parallel plan"):
        tensor_parallel_plan(nn.Sequential(nn.Linear(2, 2)))


def test_gpt_loads_a_checkpoint_of_the_fused_qkv_projection() -> None:
    """Checkpoints written before q, k and v had projections of their own hold `attn.qkv`."""
    model = tiny_gpt(0)
    old = {}
    for name, value in model.state_dict().items():
        for kind in ("weight", "bias"):
            if name.endswith(f"attn.q.{kind}"):
                prefix = name.removesuffix(f"q.{kind}")
                parts = [model.state_dict()[f"{prefix}{p}.{kind}"] for p in "qkv"]
                old[f"{prefix}qkv.{kind}"] = torch.cat(parts)
        if not any(name.endswith(f"attn.{p}.{kind}") for p in "qkv" for kind in ("weight", "bias")):
            old[name] = value
    other = tiny_gpt(1)
    other.load_state_dict(old)
    idx = torch.randint(0, 16, (2, 8))
    assert torch.equal(other(idx), model(idx))
