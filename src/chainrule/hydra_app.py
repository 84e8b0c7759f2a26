"""Running a Hydra app the chainrule way: configs found in source or installed layouts, choices checked
before anything starts, and user errors shown as one message instead of a traceback."""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException

from chainrule.distributed import detect_launch, prefix_console
from chainrule.errors import ChainruleError, unknown_choice
from chainrule.redaction import redact_argv, redact_files, redact_logging
from chainrule.resume_cli import resume_arguments
from chainrule.run import check_run_identity, rank_overrides, register_resolvers

register_resolvers()

CONFIG_DIR_ENV = "CHAINRULE_CONFIG_DIR"


def config_dir() -> Path:
    """`$CHAINRULE_CONFIG_DIR` when set (e.g. a config tree mounted into a container), else `conf/` inside
    an installed wheel, else the repository's `conf/` (editable/source checkout)."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV]).resolve()
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


class UserError(CompactHydraException):
    """Hydra prints a CompactHydraException as its message alone, without a stack trace."""


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


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn chainrule's errors, a constructor refusing its config values, and Lightning's
    MisconfigurationException into one-message Hydra errors (the traceback with HYDRA_FULL_ERROR=1)."""
    # Lightning is imported here, not at the top, so that command-line errors answer before torch loads.
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        yield
    except (ChainruleError, MisconfigurationException) as error:
        raise UserError(str(error)) from (error if full else None)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, (ChainruleError, MisconfigurationException)):
            raise UserError(str(cause)) from (error if full else None)
        # Hydra's message: "Error in call to target 'x':\nTypeError(...)\nfull_key: y" -> one line.
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(f"cannot build from the config: {text}") from (error if full else None)


def protect_secrets() -> None:
    """Keep secrets out of this run's files: Hydra's saved config files, its log file, and the command
    line that loggers record."""
    redact_logging()
    redact_argv()
    hydra = HydraConfig.get()
    if hydra.output_subdir is not None:
        redact_files(Path(hydra.runtime.output_dir) / hydra.output_subdir)


def run(app: Callable[[], object], argv: list[str] | None = None) -> None:
    """Check the command line, then run a `hydra.main`-decorated `app` (on this rank, when an external
    launcher started several: see chainrule.run for what differs on ranks other than 0)."""
    argv = sys.argv[1:] if argv is None else argv
    launch = detect_launch()
    prefix_console(launch.rank)
    try:
        check_group_choices(argv, config_dir())
        # Hydra (and Lightning, when it starts more ranks) read sys.argv itself.
        sys.argv[1:] = argv = resume_arguments(argv)
        check_run_identity(argv, launch)
    except ChainruleError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"chainrule: error: {error}", file=sys.stderr)
        sys.exit(2)
    extra = rank_overrides(launch)
    if extra:
        sys.argv = [sys.argv[0], *argv, *extra]
    app()
