"""The config tree: where it is, which groups it has, and which options each group offers."""

import os
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from chainrule.core.errors import unknown_choice

CONFIG_DIR_ENV = "CHAINRULE_CONFIG_DIR"

#: The groups whose option builds one object of a training run (its `_target_`), in the order the
#: builders use them: data first, since the model's input and output sizes come from it.
BUILT_GROUPS = ("data", "model", "task", "loss", "optim", "scheduler", "trainer")


def config_dir() -> Path:
    """`$CHAINRULE_CONFIG_DIR` when set (e.g. a config tree mounted into a container), else `conf/` inside
    an installed wheel, else the repository's `conf/` (editable/source checkout)."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV]).resolve()
    packaged = Path(__file__).parents[1] / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "conf"


def config_groups(conf: Path | None = None) -> list[str]:
    """Every config group a command line can choose from (a folder of YAML options in the config tree),
    the built ones first; Hydra's own settings (`hydra/`) are not among them."""
    conf = config_dir() if conf is None else conf
    found = sorted(p.name for p in conf.iterdir() if p.is_dir() and any(p.glob("*.yaml")) and p.name != "hydra")
    return [g for g in BUILT_GROUPS if g in found] + [g for g in found if g not in BUILT_GROUPS]


def check_group_choices(overrides: list[str], conf: Path) -> None:
    """Fail on `group=option` overrides naming an option that has no YAML file, listing the valid ones.

    Hydra reports this too, but only after composing and over several lines; this check is one line.
    """
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except OverrideParseException:
        return  # Hydra reports malformed overrides itself
    for override in parsed:
        group = override.key_or_group
        folder = conf / group
        if override.is_delete() or not folder.is_dir() or group.startswith("hydra"):
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        choices = sorted(p.stem for p in folder.glob("*.yaml"))
        for value in values:
            if isinstance(value, str) and value not in choices and value != "null":
                raise unknown_choice(group.replace("/", "."), value, choices)
