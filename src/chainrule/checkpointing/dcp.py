"""Sharded checkpoints through torch.distributed.checkpoint (DCP): every rank writes and reads only its
own shards, and a checkpoint written by N ranks loads on any number of ranks (DCP maps the saved shards
onto the new sharding). The folder layout and its atomic appearance: chainrule.checkpointing.sharded.

Reading is as safe as chainrule's loading of checkpoint files (chainrule.checkpointing.io): DCP's own
reader unpickles its index with `pickle` and loads non-tensor entries with `weights_only=False`, either of
which runs code from a crafted checkpoint; here the index is unpickled with an allow-list of DCP's own
metadata types and every entry is loaded with `weights_only=True`.

`consolidate` turns a sharded checkpoint into one ordinary checkpoint file in a single process, without
the model, for chainrule-eval, or to continue on a strategy that does not shard.
"""

import io
import os
import pickle
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, _EmptyStateDictLoadPlanner
from torch.optim import Optimizer

from chainrule.checkpointing.io import SAFE_GLOBALS, load_checkpoint
from chainrule.checkpointing.sharded import (
    META,
    commit,
    read_manifest,
    remove,
    temporary_name,
    write_durably,
    write_manifest,
)
from chainrule.core.errors import CheckpointError

MODEL_KEY = "state_dict"  # the keys Lightning's ModelParallelStrategy uses, so that each reads the other's
OPTIMIZER_KEY = "optimizer_{}"


# --- safe reading ---------------------------------------------------------------------------------------
class _IndexUnpickler(pickle.Unpickler):
    """Unpickles DCP's index (`.metadata`): its dataclasses, torch dtypes and sizes, paths; nothing else."""

    ALLOWED = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
               ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("pathlib", "PosixPath"),
               ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath")}

    def find_class(self, module: str, name: str) -> Any:
        known = module.startswith(("torch", "pathlib", "collections"))
        found = super().find_class(module, name) if known else None
        if (module, name) in self.ALLOWED or isinstance(found, torch.dtype) or (
                module == dcp_metadata.__name__ and isinstance(found, type)):
            return found
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed in a checkpoint's index")


class SafeReader(FileSystemReader):
    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        rank = kwargs.get("rank")
        path = self._get_metadata_path(rank)
        with self.fs.create_stream(path, "rb") as f:
            metadata = _IndexUnpickler(f).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _load_entry(value: io.BytesIO) -> Any:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(value, weights_only=True)


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, loading non-tensor entries (step counts, hyperparameters) as data only."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        _set_bytes(self, read_item, value)


class _SafeEmptyLoadPlanner(_EmptyStateDictLoadPlanner):
    """DCP's planner that rebuilds the whole saved state from the index (torch's own dcp_to_torch_save uses
    it), loading non-tensor entries as data only."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        _set_bytes(self, read_item, value)


def _set_bytes(planner: DefaultLoadPlanner, read_item: Any, value: io.BytesIO) -> None:
    from torch.distributed.checkpoint._nested_dict import set_element  # as DefaultLoadPlanner.load_bytes

    loaded = _load_entry(value)
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], loaded)
    else:
        planner.state_dict[read_item.dest_index.fqn] = loaded


@contextmanager
def _refusing_code(path: Path) -> Iterator[None]:
    """Turn a refused global (in the index or an entry) into one CheckpointError naming it. DCP wraps the
    readers' errors in CheckpointException, a BaseException."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with warnings.catch_warnings():  # one process is what chainrule asked for, not a surprise
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            yield
    except (pickle.UnpicklingError, CheckpointException) as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise
        raise CheckpointError(
            f"refusing to load checkpoint {path}: it contains Python objects that would run code when "
            f"unpickled ({found.group(1)}); chainrule loads only tensors and plain containers. Use "
            f"checkpoints written by chainrule-train"
        ) from None


def _reading(path: Path) -> dict[str, Any]:
    """Keyword arguments of dcp.load for the sharded checkpoint `path`; CheckpointError for a damaged one."""
    if read_manifest(path) is None:
        raise CheckpointError(f"{path} is not a complete sharded checkpoint (its manifest is missing or "
                              f"damaged); pick an older one from the run's checkpoints/ folder")
    return {"storage_reader": SafeReader(path), "planner": SafeLoadPlanner()}


# --- writing and loading on all ranks -------------------------------------------------------------------
def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _broadcast(value: Any) -> Any:
    if _world() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if _world() > 1:
        dist.barrier()


def save_sharded(path: str | Path, state: dict[str, Any], meta: dict[str, Any], write_delay_s: float) -> None:
    """Write a sharded checkpoint at `path` (a folder), collectively: every rank calls it with its own
    shards in `state` (DTensors and plain tensors, as DCP takes them); rank 0's `meta` (plain data) goes to
    meta.pt. The folder appears under `path` only once complete (chainrule.checkpointing.sharded).

    write_delay_s: for tests only; rank 0 waits this long before completing the folder, so that a test can
    kill the writers while a checkpoint is incomplete. 0 in real runs.
    """
    import torch.distributed.checkpoint as dcp

    path = Path(_broadcast(str(path)))
    temporary = Path(_broadcast(str(temporary_name(path, os.getpid()))))
    if _rank() == 0:
        remove(temporary)
        temporary.mkdir(parents=True)
    _barrier()
    # Collective: DCP's coordinator writes the index after every rank wrote its shards, before returning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, storage_writer=FileSystemWriter(temporary, sync_files=True), no_dist=_world() == 1)
    if _rank() == 0:
        buffer = io.BytesIO()
        torch.save(meta, buffer)
        write_durably(temporary / META, buffer.getvalue())
        if write_delay_s > 0:
            time.sleep(write_delay_s)
        write_manifest(temporary, _world())
        commit(temporary, path)
    _barrier()


def load_sharded(path: str | Path, module: nn.Module, optimizers: Sequence[Optimizer],
                 strict: bool) -> dict[str, Any]:
    """Load the sharded checkpoint at `path` into `module` (its DTensor shards, whatever the number of
    ranks that wrote it) and `optimizers`, collectively; returns meta.pt's contents (plain data)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = Path(path)
    no_dist = _world() == 1
    model_state = {MODEL_KEY: get_model_state_dict(module)}
    with _refusing_code(path):
        dcp.load(model_state, **_reading(path), no_dist=no_dist)
    set_model_state_dict(module, model_state[MODEL_KEY], options=StateDictOptions(strict=strict))
    # One optimizer at a time, after the model: get_optimizer_state_dict builds a fresh optimizer's state
    # (by a step with learning rate 0), which DCP then overwrites in place.
    for index, optimizer in enumerate(optimizers):
        key = OPTIMIZER_KEY.format(index)
        optimizer_state = {key: get_optimizer_state_dict(module, optimizer)}
        with _refusing_code(path):
            dcp.load(optimizer_state, **_reading(path), no_dist=no_dist)
        set_optimizer_state_dict(module, optimizer, optim_state_dict=optimizer_state[key])
    return load_checkpoint(path / META)


# --- consolidation: one process, no model ---------------------------------------------------------------
def consolidate(path: str | Path) -> dict[str, Any]:
    """The sharded checkpoint at `path` as one ordinary checkpoint (Lightning's layout): whole tensors in
    `state_dict`, optimizer states keyed by parameter index as `torch.optim` saves them, and meta.pt's
    entries. Runs in one process; needs memory for the whole state."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict  # as dcp_to_torch_save

    path = Path(path)
    _reading(path)
    state: dict[str, Any] = {}
    with _refusing_code(path):
        _load_state_dict(state, storage_reader=SafeReader(path), planner=_SafeEmptyLoadPlanner(),
                         no_dist=True)
    checkpoint = load_checkpoint(path / META)
    checkpoint[MODEL_KEY] = state.pop(MODEL_KEY)
    count = len([key for key in state if key.startswith(OPTIMIZER_KEY.format(""))])
    checkpoint["optimizer_states"] = [_keyed_by_index(state[OPTIMIZER_KEY.format(i)]) for i in range(count)]
    return checkpoint


def _keyed_by_index(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter names (torch.distributed.checkpoint.state_dict's form) keyed by
    position instead, as `Optimizer.state_dict()` keys it: the parameters numbered in the order of the
    parameter groups, which is the order a new optimizer over the same groups numbers them."""
    groups, index = [], {}
    for group in optimizer_state["param_groups"]:
        names = list(group["params"])
        groups.append({**group, "params": [index.setdefault(name, len(index)) for name in names]})
    state = {index[name]: value for name, value in optimizer_state["state"].items() if name in index}
    return {"state": state, "param_groups": groups}

