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


# The user's own options: `./conf/` where a command starts, and this variable's folder.
USER_CONFIG_DIR = "conf"


def config_dir() -> Path:
    """chainrule's own config tree: `conf/` inside an installed wheel, else the repository's `conf/`
    (editable/source checkout)."""
    packaged = Path(__file__).parents[1] / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "conf"


def user_config_dirs() -> list[Path]:
    """The folders of the user's own options, searched before chainrule's tree: `$CHAINRULE_CONFIG_DIR`
    (e.g. a site's configs, or a tree mounted into a container), then `./conf` (a project's own)."""
    found = [Path(os.environ[CONFIG_DIR_ENV]) if os.environ.get(CONFIG_DIR_ENV) else None, Path(USER_CONFIG_DIR)]
    dirs = [folder.resolve() for folder in found if folder is not None and folder.is_dir()]
    return [folder for i, folder in enumerate(dirs) if folder != config_dir().resolve() and folder not in dirs[:i]]


def config_dirs() -> list[Path]:
    """Every config tree a command composes from, the first found winning: the user's, then chainrule's."""
    return [*user_config_dirs(), config_dir()]


def config_groups() -> list[str]:
    """Every config group a command line can choose from (a folder of YAML options in a config tree),
    the built ones first; Hydra's own settings (`hydra/`) are not among them."""
    found = sorted({p.name for conf in config_dirs() for p in conf.iterdir()
                    if p.is_dir() and any(p.glob("*.yaml")) and p.name != "hydra"})
    return [g for g in BUILT_GROUPS if g in found] + [g for g in found if g not in BUILT_GROUPS]


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files in every config tree (not those of subfolders)."""
    return sorted({p.stem for conf in config_dirs() for p in (conf / group).glob("*.yaml")})


def groups_help(*only: str) -> str:
    """`group: option, option, ...` for every config group (or those named), one line each, for `--help`."""
    groups = [g for g in config_groups() if not only or g in only]
    width = max(map(len, groups), default=0)
    return "\n".join(f"  {group:<{width}}  {', '.join(group_options(group))}" for group in groups)


def check_group_choices(overrides: list[str]) -> None:
    """Fail on `group=option` overrides naming an option that has no YAML file, listing the valid ones.

    Hydra reports this too, but only after composing and over several lines; this check is one line.
    """
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except OverrideParseException:
        return  # Hydra reports malformed overrides itself
    for override in parsed:
        group = override.key_or_group
        if override.is_delete() or group.startswith("hydra") or not any((c / group).is_dir() for c in config_dirs()):
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        choices = group_options(group)
        for value in values:
            nested = isinstance(value, str) and any((c / group / f"{value}.yaml").is_file() for c in config_dirs())
            if isinstance(value, str) and value not in choices and value != "null" and not nested:
                raise unknown_choice(group.replace("/", "."), value, choices)
