"""Where things are: this checkout, its config tree, and the executables of the environment running the
tests."""

import sys
from pathlib import Path

from chainrule.config.groups import config_dir

REPO = Path(__file__).resolve().parents[2]
CONF = config_dir()
# Console scripts of this environment: chainrule-train and the other chainrule-*, torchrun, wandb, hadolint.
BIN = Path(sys.executable).parent


def conf_options(group: str) -> list[str]:
    """Every option of a config group: parametrizing over this tests new files automatically."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))
