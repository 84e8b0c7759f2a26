"""Running a Hydra app the chainrule way: configs found in source or installed layouts, choices checked
before anything starts, and user errors shown as one message instead of a traceback."""

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from omegaconf import DictConfig

from chainrule.config.groups import BUILT_GROUPS, check_group_choices, config_dir
from chainrule.config.resume_args import resume_arguments
from chainrule.core import console
from chainrule.core.errors import ChainruleError
from chainrule.core.secrets import redact_argv, redact_files, redact_logging
from chainrule.launch.console import prefix_console
from chainrule.launch.detect import detect_launch
from chainrule.launch.local_ranks import on_all_ranks
from chainrule.launch.run_id import check_run_identity, rank_overrides

T = TypeVar("T")


class UserError(CompactHydraException):
    """Hydra prints a CompactHydraException as its message alone, without a stack trace."""


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


def execute(fn: Callable[[DictConfig], T], cfg: DictConfig, required: Sequence[str] | None = None,
            all_ranks: bool = True) -> T:
    """What every chainrule command does around its work `fn(cfg)`: secrets kept out of its files and
    logs, the config validated (`required`: the groups it builds; None: those of training) before any
    further rank starts, `fn` run on every rank of the run (or here only), errors shown as one message,
    and the logger runs finished (marked failed on an exception)."""
    # Imported here: `--help`, `--cfg` and command-line errors answer without loading torch.
    from chainrule.config.validation import validate
    from chainrule.loggers.wandb import finishing_wandb_run

    with user_errors(), finishing_wandb_run():
        protect_secrets()
        validate(cfg, required=BUILT_GROUPS if required is None else required)
        return on_all_ranks(fn, cfg) if all_ranks else fn(cfg)


def run(app: Callable[[], object], argv: list[str] | None = None) -> None:
    """Check the command line, then run a `hydra.main`-decorated `app` (on this rank, when an external
    launcher started several: see chainrule.launch.run_id for what differs on ranks other than 0)."""
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
        console.error_line(str(error))
        sys.exit(2)
    extra = rank_overrides(launch)
    if extra:
        sys.argv = [sys.argv[0], *argv, *extra]
    app()
