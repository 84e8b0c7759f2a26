"""The RNG streams of every rank inside every checkpoint, restored on resume."""

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from chainrule.core import console


class RngStatesInCheckpoint(L.Callback):
    """Saves the RNG states of every rank (python, numpy, torch CPU and CUDA) with each checkpoint and
    gives each rank its own back when training resumes, so dropout masks and other random draws continue
    as if the run had never stopped.

    States are restored at `on_train_start`, the last hook before the first resumed batch, so nothing
    that Lightning does while setting up consumes random numbers from the restored streams.
    """

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = _rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"ranks": gathered}
        return {"ranks": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict.get("ranks")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ranks, self._to_restore = self._to_restore, None
        if not ranks:
            return
        if len(ranks) != trainer.world_size:
            console.warn(
                f"the checkpoint holds RNG states of {len(ranks)} ranks but this run has "
                f"{trainer.world_size}; random streams continue from fresh seeds instead"
            )
            return
        _set_rng_states(ranks[trainer.global_rank])


def _rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        # numpy's state as tensors and numbers, so that loading needs no numpy types
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_as_tuples(states["python"]))
    n = states["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples it gave; some loaders return lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value

