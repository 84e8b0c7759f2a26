"""The real config tree (conf/, or CHAINRULE_CONFIG_DIR): its options, and composing it as the entry points
do."""

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.support.paths import CONF


def conf_options(group: str) -> list[str]:
    """Every option of a config group: parametrizing over this tests new files automatically."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_config(*overrides: str, config_name: str = "train",
                   return_hydra_config: bool = False) -> DictConfig:
    """`config_name`.yaml composed with `overrides`, outside a Hydra app (so ${hydra:...} does not resolve:
    the compose_train fixture pins the paths that need it)."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
