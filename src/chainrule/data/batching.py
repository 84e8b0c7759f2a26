"""The one rule that splits a global batch over processes and accumulation steps."""

from chainrule.core.errors import ConfigError


def per_device_batch_size(global_batch_size: int, world_size: int, accumulate_grad_batches: int = 1) -> int:
    """Samples each process loads per step so that one optimizer step sees `global_batch_size` samples.

    global = per_device x world_size x accumulate_grad_batches, exactly: a remainder would silently
    change the optimization, so it is an error.
    """
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ConfigError(f"data.batch_size must be a positive integer, got {global_batch_size!r}")
    if (isinstance(accumulate_grad_batches, bool) or not isinstance(accumulate_grad_batches, int)
            or accumulate_grad_batches < 1):
        raise ConfigError(f"trainer.accumulate_grad_batches must be a positive integer (micro-batches per "
                          f"optimizer step), got {accumulate_grad_batches!r}; use 1 for no accumulation")
    shards = world_size * accumulate_grad_batches
    if global_batch_size % shards:
        raise ConfigError(
            f"data.batch_size={global_batch_size} (global) is not divisible by world size {world_size} x "
            f"trainer.accumulate_grad_batches={accumulate_grad_batches} = {shards}; "
            f"use a multiple of {shards}, e.g. data.batch_size={max(shards, global_batch_size // shards * shards)}"
        )
    return global_batch_size // shards
