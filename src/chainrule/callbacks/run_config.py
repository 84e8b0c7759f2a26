"""The run's config inside every checkpoint."""

from typing import Any

import lightning as L

from chainrule.checkpointing.io import CONFIG_KEY
from chainrule.core.secrets import redact


class RunConfigInCheckpoint(L.Callback):
    """Stores the run's resolved config (plain dicts and lists, secrets redacted) in every checkpoint, so
    that a checkpoint alone rebuilds its model and data; no Python objects are pickled into it."""

    def __init__(self, config: dict[str, Any]):
        self.config = redact(config)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config

