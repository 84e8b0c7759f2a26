"""Checks of a command line that need its composed config but not torch, made before Hydra starts the
run: wrong values and run directories that cannot be used are refused in about a second, as one line,
and before anything is written."""

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from chainrule.config.groups import config_dir
from chainrule.config.run_record import check_run_dir
from chainrule.core.errors import ConfigError
from chainrule.core.ranges import check_ranges
from chainrule.launch.run_id import pinned_run_id


def compose_job(config_name: str, argv: list[str]) -> DictConfig:
    """The job config `argv` composes (Hydra's own settings left out), as the run will see it."""
    overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra.")]
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(" ".join(line.strip() for line in str(error).splitlines() if line.strip())) from None


def explicit_run_dir(argv: list[str]) -> Path | None:
    """The run directory the command line names (`hydra.run.dir=...`, or a pinned run id), or None when
    the run gets a new one."""
    for override in OverridesParser.create().parse_overrides([a for a in argv if a.startswith("hydra.run.dir=")]):
        return Path(str(override.value())).expanduser()
    return None


def preflight(config_name: str, argv: list[str], run_dir_check: bool) -> None:
    """Compose `argv` and refuse out-of-range values, a run directory that holds another run (when
    `run_dir_check`: on rank 0, which writes the run's record; other ranks would race with it), and a
    run directory that cannot be written."""
    cfg = compose_job(config_name, argv)
    try:
        check_ranges(cfg)
        runs_dir = Path(cfg.paths.runs_dir)
    except OmegaConfBaseException as error:
        raise ConfigError(" ".join(str(error).split())) from None
    run_dir = explicit_run_dir(argv)
    if run_dir is None and pinned_run_id() is not None:
        run_dir = runs_dir / pinned_run_id()
    if run_dir is not None and run_dir_check:
        check_run_dir(run_dir, argv)
    _check_writable(run_dir or runs_dir)


def _check_writable(folder: Path) -> None:
    """The nearest existing folder on the way to `folder` must let this user create files."""
    existing = folder.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write into {existing}: permission denied; run from a directory you can "
                          f"write to, or point the runs elsewhere with paths.log_dir=<folder>")

