"""The DDP trainer configs build the Trainer they describe: every key reaches its constructor argument."""

from datetime import timedelta

import pytest
from hydra.utils import instantiate
from lightning.pytorch.plugins import TorchSyncBatchNorm
from lightning.pytorch.strategies import DDPStrategy

from tests.support.configs import compose_config


def build(*overrides: str):
    cfg = compose_config("paths.output_dir=/tmp/unused", *overrides)
    return instantiate(cfg.trainer, logger=False, enable_checkpointing=False)


@pytest.mark.parametrize("overrides, backend", [
    (["trainer=ddp_cpu"], "gloo"),
    # The GPU config with only the accelerator swapped (building a Trainer starts no process group).
    (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], "nccl"),
])
def test_ddp_knobs_reach_distributed_data_parallel(overrides: list[str], backend: str) -> None:
    trainer = build(*overrides, "trainer.strategy.find_unused_parameters=true",
                    "trainer.strategy.static_graph=true", "trainer.strategy.bucket_cap_mb=5",
                    "trainer.strategy.timeout.minutes=2", "trainer.sync_batchnorm=true")
    strategy = trainer.strategy
    assert isinstance(strategy, DDPStrategy)
    assert strategy._process_group_backend == backend
    assert strategy._timeout == timedelta(minutes=2)
    assert strategy._ddp_kwargs == {"find_unused_parameters": True, "gradient_as_bucket_view": True,
                                    "static_graph": True, "bucket_cap_mb": 5}
    assert isinstance(strategy._layer_sync, TorchSyncBatchNorm)
    assert trainer.num_devices == 2 and trainer.num_nodes == 1


def test_data_modules_not_lightning_shard_the_data() -> None:
    """Lightning's DistributedSampler would replace chainrule's global-batch order (and pad)."""
    assert build("trainer=ddp_cpu")._accelerator_connector.use_distributed_sampler is False


@pytest.mark.parametrize("overrides, backend, mixed_precision", [
    (["trainer=fsdp_cpu"], "gloo", None),
    (["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"], "nccl", "bf16"),
])
def test_sharding_knobs_reach_the_strategy(overrides: list[str], backend: str,
                                           mixed_precision: str | None) -> None:
    from chainrule.training.sharded_strategy import ShardedStrategy

    trainer = build(*overrides, "trainer.strategy.tensor_parallel_size=2",
                    "trainer.strategy.timeout.minutes=2", "trainer.strategy.activation_checkpointing=true",
                    "trainer.strategy.reshard_after_forward=false")
    strategy = trainer.strategy
    assert isinstance(strategy, ShardedStrategy)
    assert strategy._process_group_backend == backend and strategy._timeout == timedelta(minutes=2)
    assert strategy._tensor_parallel_size == 2 and strategy._data_parallel_size == "auto"
    assert strategy.options == {"mixed_precision": mixed_precision, "activation_checkpointing": True,
                                "cpu_offload": False, "reshard_after_forward": False}
    assert trainer.num_devices == 2 and trainer._accelerator_connector.use_distributed_sampler is False


@pytest.mark.parametrize(("overrides", "writers"), [
    ([], ["Checkpoints"]),  # the default callbacks: chainrule's checkpoints, written in the background
    (["callbacks=none"], []),  # no checkpoint the config does not show (Lightning would add its own)
    (["+trainer.enable_checkpointing=false"], []),
])
def test_checkpoints_are_written_only_where_the_config_says(overrides: list[str], writers: list[str],
                                                            compose_train) -> None:
    from chainrule.checkpointing.io import AtomicCheckpointIO
    from chainrule.config import builders

    cfg = compose_train("trainer.accelerator=cpu", "logger=none", *overrides)
    trainer = builders.build_trainer(cfg, builders.build_callbacks(cfg), [])
    assert [type(c).__name__ for c in trainer.checkpoint_callbacks] == writers
    io = trainer.strategy.checkpoint_io
    assert isinstance(io, AtomicCheckpointIO) and io.in_background
