"""Running a function on several real ranks in the test: fresh processes joined by a gloo process group on
this machine's CPU, for code that needs collectives (sharded tensors, DTensor norms) but not a whole
training run. Each rank pays torch's import (a few seconds), so keep the functions tiny."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from tests.support.processes import free_port


def on_gloo_ranks(fn: Callable[..., Any], world: int, *args: Any) -> list[Any]:
    """`fn(rank, world, *args)` on `world` spawned processes in one gloo process group; their return
    values (plain data and tensors), by rank. `fn` must be importable (a module-level function)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_rank, args=(fn, world, port, folder, args), nprocs=world, start_method="spawn")
        return [torch.load(Path(folder) / f"{rank}.pt", weights_only=False) for rank in range(world)]


def _rank(rank: int, fn: Callable[..., Any], world: int, port: int, folder: str, args: tuple) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # the machine's few cores are shared by all ranks
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world, *args), Path(folder) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()
