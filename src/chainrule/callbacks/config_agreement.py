"""Every rank of a run trains the same configuration: checked once the ranks have met.

Ranks started by an external launcher compose their configs separately; a per-node environment
variable, a different file, or `${now:}` in a value would make them train different things silently.
"""

from collections.abc import Mapping
from typing import Any

import lightning as L

from chainrule.core.errors import ConfigError


def config_differences(reference: Any, config: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain (resolved) configs."""
    if isinstance(reference, Mapping) and isinstance(config, Mapping):
        keys = sorted(set(reference) | set(config), key=str)
        return [
            difference
            for key in keys
            for difference in config_differences(reference.get(key, KeyError), config.get(key, KeyError),
                                                 f"{prefix}{key}.")
        ]
    return [] if reference == config else [prefix.rstrip(".")]


class SameConfigOnAllRanks(L.Callback):
    """Stops a multi-process run whose ranks resolved different configs, naming the differing keys."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self._checked = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._checked or trainer.world_size == 1:
            return
        self._checked = True
        reference = trainer.strategy.broadcast(self.config, src=0)
        differing = config_differences(reference, self.config)
        # Every rank learns whether any rank differs, so that all of them stop rather than wait.
        if trainer.strategy.reduce_boolean_decision(bool(differing), all=False):
            where = (f"rank {trainer.global_rank} resolved {', '.join(differing[:8])} differently from rank 0"
                     if differing
                     else "another rank resolved a different config from rank 0's (see its output)")
            raise ConfigError(f"{where}; start every rank with the same command line, config files and "
                              f"environment")
