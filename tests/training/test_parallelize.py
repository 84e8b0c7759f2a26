"""Sharding every model of conf/model/ (trainer=fsdp_cpu on one rank, in this process), and what the
strategy's options do to a model (chainrule.training.parallelize). Equality with one process on several
ranks: tests/training/test_sharded_runs.py; norms: tests/optim/test_grad_norms.py."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from chainrule.config import builders
from chainrule.config.validation import validate
from chainrule.core.errors import ConfigError
from chainrule.models.sharding import sharding_units
from tests.config.test_conf_groups import COMPANIONS
from tests.support.configs import conf_options
from tests.support.fake_vision_data import populate
from tests.support.gloo import on_gloo_ranks

SHARDED_ONE_RANK = [
    "trainer=fsdp_cpu", "trainer.devices=1", "trainer.max_steps=2", "trainer.limit_val_batches=1",
    "logger=none", "callbacks=none", "data.batch_size=16", "test=false",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture
def own_process_group() -> Iterator[None]:
    """Lightning starts a one-rank process group (and sets its rendezvous variables) in this process; the
    next test starts from none."""
    saved = dict(os.environ)
    torch.set_num_threads(1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("option", conf_options("model"))
def test_every_model_trains_sharded_by_the_units_it_declares(option: str, compose_train, tmp_path: Path,
                                                             own_process_group: None) -> None:
    populate(tmp_path / "data")
    cfg = compose_train(f"model={option}", *COMPANIONS.get(("model", option), []), *SHARDED_ONE_RANK,
                        f"paths.data_dir={tmp_path / 'data'}")
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    before = {name: p.detach().clone() for name, p in task.model.named_parameters()}
    trainer = builders.build_trainer(cfg, callbacks=[], loggers=[])
    trainer.fit(task, datamodule=datamodule)

    assert trainer.global_step == 2
    units = sharding_units(task.model)
    assert units and all(isinstance(unit, FSDPModule) for unit in [task.model, *units])
    after = dict(task.model.named_parameters())
    assert after.keys() == before.keys() and all(isinstance(p, DTensor) for p in after.values())
    assert any(not torch.equal(after[name].full_tensor(), value) for name, value in before.items())


def test_tensor_parallelism_needs_a_model_with_a_plan_and_a_size_that_divides(compose_train) -> None:
    """Refused before any process starts (chainrule.config.validation)."""
    with pytest.raises(ConfigError, match="MLP declares none"):
        validate(compose_train("trainer=fsdp_cpu", "trainer.strategy.tensor_parallel_size=2"), machine=False)
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 does not divide the 3 ranks"):
        validate(compose_train("experiment=tokens_gpt", "trainer=fsdp_cpu", "trainer.devices=3",
                               "trainer.strategy.tensor_parallel_size=2"), machine=False)
    validate(compose_train("experiment=tokens_gpt", "trainer=fsdp_cpu",
                           "trainer.strategy.tensor_parallel_size=2"), machine=False)


def options_in_effect(rank: int, world: int) -> dict:
    """How often a block's first MLP layer runs in one training step (a recomputation stops once it has
    what the backward pass needs, so the MLP as a whole does not finish again), and the dtypes inside and
    outside the blocks, with each option off and on."""
    from torch.distributed.device_mesh import init_device_mesh

    from chainrule.models.gpt import GPT
    from chainrule.training.parallelize import DATA_PARALLEL, TENSOR_PARALLEL, parallelize

    found = {}
    for mixed_precision, checkpointing in ((None, False), ("bf16", True)):
        mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=(DATA_PARALLEL, TENSOR_PARALLEL))
        model = GPT((8,), 16, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)
        parallelize(model, mesh, mixed_precision=mixed_precision, activation_checkpointing=checkpointing,
                    cpu_offload=False, reshard_after_forward=True)
        seen = []
        model.blocks[0].mlp[0].register_forward_hook(lambda module, args, out: seen.append(args[0].dtype))
        output = model(torch.randint(0, 16, (2, 8)))
        output.float().sum().backward()
        weight = model.blocks[0].mlp[0].weight
        found[mixed_precision or "fp32"] = {"mlp_calls": len(seen), "inside": seen[0], "output": output.dtype,
                                            "parameters": weight.dtype, "gradients": weight.grad.dtype}
    return found


@pytest.mark.multiprocess
def test_mixed_precision_computes_in_bf16_and_keeps_fp32_state_and_checkpointing_recomputes() -> None:
    (found,) = on_gloo_ranks(options_in_effect, 1)
    assert found["fp32"] == {"mlp_calls": 1, "inside": torch.float32, "output": torch.float32,
                             "parameters": torch.float32, "gradients": torch.float32}
    # bf16 inside the blocks; the loss sees fp32; sharded parameters, gradients (and so the optimizer)
    # stay fp32; each block's forward runs again in backward.
    assert found["bf16"] == {"mlp_calls": 2, "inside": torch.bfloat16, "output": torch.float32,
                             "parameters": torch.float32, "gradients": torch.float32}
