"""Where things are: this checkout, its config tree, and the executables of the environment running the
tests."""

import sys
from pathlib import Path

from chainrule.config.groups import config_dir

REPO = Path(__file__).resolve().parents[2]
CONF = config_dir()
# Console scripts of this environment: chainrule-train and the other chainrule-*, torchrun, wandb, hadolint.
BIN = Path(sys.executable).parent
