"""`trainer=fsdp`: Lightning's ModelParallelStrategy (FSDP2 and tensor parallelism over a DeviceMesh) with
chainrule's sharding options, data-parallel size, and crash-safe sharded checkpoints.

The strategy owns the mesh (data_parallel x tensor_parallel) and the options; the model declares what to
shard (chainrule.models.sharding); chainrule.training.parallelize applies it, called by the Task's
`configure_model`. Checkpoints are folders written by all ranks (chainrule.checkpointing.dcp), appearing
atomically, found and resumed like checkpoint files, and loadable on any number of ranks.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from chainrule.checkpointing.dcp import OPTIMIZER_KEY, load_sharded, save_sharded
from chainrule.checkpointing.io import load_checkpoint
from chainrule.checkpointing.sharded import is_sharded
from chainrule.core.errors import ConfigError
from chainrule.training.parallelize import PARAM_DTYPES, parallelize

AUTO = "auto"


class ShardedStrategy(ModelParallelStrategy):
    """Fully sharded data parallelism (FSDP2), optionally with tensor parallelism, on a 2-D device mesh.

    data_parallel_size: ranks that shard the model and split each batch; `auto`: all ranks divided by
        tensor_parallel_size.
    tensor_parallel_size: ranks that split each planned layer (a model's tensor_parallel_plan); 1: FSDP alone.
    mixed_precision: null (fp32 throughout) or `bf16` (bf16 compute, fp32 parameters, optimizer and
        gradient reduction); keep trainer.precision=32-true with it.
    activation_checkpointing: recompute each sharding unit's activations in the backward pass.
    cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory (GPUs only).
    reshard_after_forward: free each unit's gathered parameters after its forward (less memory, one more
        all-gather per unit).
    process_group_backend, timeout: as for DDP (gloo on CPUs, nccl on GPUs; how long a rank waits).
    """

    def __init__(
        self,
        data_parallel_size: int | str,
        tensor_parallel_size: int,
        mixed_precision: str | None,
        activation_checkpointing: bool,
        cpu_offload: bool,
        reshard_after_forward: bool,
        process_group_backend: str | None,
        timeout: timedelta,
    ):
        if mixed_precision is not None and mixed_precision not in PARAM_DTYPES:
            raise ConfigError(f"trainer.strategy.mixed_precision={mixed_precision!r}: use null (fp32) or "
                              f"{' or '.join(PARAM_DTYPES)}")
        if data_parallel_size != AUTO and not _positive(data_parallel_size):
            raise ConfigError(f"trainer.strategy.data_parallel_size={data_parallel_size!r}: use auto or a "
                              f"positive number of ranks")
        if not _positive(tensor_parallel_size):
            raise ConfigError(f"trainer.strategy.tensor_parallel_size={tensor_parallel_size!r}: use a "
                              f"positive number of ranks (1: FSDP alone)")
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size,
                         save_distributed_checkpoint=True, process_group_backend=process_group_backend,
                         timeout=timeout)
        self.options = {"mixed_precision": mixed_precision,
                        "activation_checkpointing": activation_checkpointing, "cpu_offload": cpu_offload,
                        "reshard_after_forward": reshard_after_forward}

    def setup_environment(self) -> None:
        world = self.num_nodes * self.num_processes
        tensor = self._tensor_parallel_size
        if self._data_parallel_size == AUTO:
            if world % tensor:
                raise ConfigError(f"trainer.strategy.tensor_parallel_size={tensor} does not divide the "
                                  f"{world} ranks (trainer.devices x trainer.num_nodes)")
            self._data_parallel_size = world // tensor
        super().setup_environment()

    def setup(self, trainer: L.Trainer) -> None:
        if self.options["cpu_offload"] and self.root_device.type == "cpu":
            raise ConfigError("trainer.strategy.cpu_offload=true moves GPU state to the CPU; the trainer "
                              "runs on the CPU already: set it to false")
        super().setup(trainer)

    def parallelize(self, model: nn.Module) -> None:
        """Shard `model` over this strategy's mesh with its options (called from Task.configure_model)."""
        parallelize(model, self.device_mesh, **self.options)

    # --- checkpoints: folders written by all ranks together ----------------------------------------
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | Path,
                        storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} writes sharded checkpoints itself; storage_options "
                            f"is not supported")
        state = {"state_dict": checkpoint.pop("state_dict")}
        state |= {OPTIMIZER_KEY.format(i): s for i, s in enumerate(checkpoint.pop("optimizer_states", []))}
        # The test knob of chainrule.checkpointing.io.AtomicCheckpointIO applies to sharded writes too.
        delay = getattr(self.checkpoint_io, "write_delay_s", 0.0)
        save_sharded(filepath, state, checkpoint, write_delay_s=delay)

    def load_checkpoint(self, checkpoint_path: str | Path,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """A sharded checkpoint (from any number of ranks) or a checkpoint file (consolidated, or written by
        a run that did not shard), loaded into the sharded model and optimizers; returns the rest."""
        path = Path(self.broadcast(str(checkpoint_path)))
        assert self.model is not None and self.lightning_module is not None
        strict = self.lightning_module.strict_loading
        if is_sharded(path):
            return load_sharded(path, self.model, self.optimizers, strict=strict)
        from lightning.fabric.strategies.model_parallel import _load_checkpoint

        load_checkpoint(path)  # refuses (one line) anything that is not plain data before Lightning reads it
        state = {"state_dict": self.model, **{f"optimizer_{i}": o for i, o in enumerate(self.optimizers)}}
        return _load_checkpoint(path=path, state=state, strict=strict, optimizer_states_from_list=True,
                                weights_only=True)


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
