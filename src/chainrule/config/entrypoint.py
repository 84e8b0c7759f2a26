"""Running a Hydra app the chainrule way: configs found in source or installed layouts, choices checked
before anything starts, and user errors shown as one message instead of a traceback."""

import errno
import gc
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from chainrule.config.command_line import quote_paths
from chainrule.config.groups import BUILT_GROUPS, check_group_choices
from chainrule.config.init_args import fixed_overrides, init_from_arguments
from chainrule.config.preflight import compose_job, preflight
from chainrule.config.resume_args import resume_arguments
from chainrule.config.run_record import recording_run
from chainrule.core import console
from chainrule.core.errors import ChainruleError, ConfigError
from chainrule.core.secrets import redact_argv, redact_logging, remember_config_secrets
from chainrule.launch.console import prefix_console
from chainrule.launch.detect import detect_launch
from chainrule.launch.local_ranks import on_all_ranks
from chainrule.launch.run_id import check_run_identity, rank_overrides

T = TypeVar("T")


class UserError(CompactHydraException):
    """Hydra prints a CompactHydraException as its message alone, without a stack trace."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn chainrule's errors, a constructor refusing its config values, Lightning's
    MisconfigurationException and a run directory that cannot be written into UserErrors with one
    message (the traceback with HYDRA_FULL_ERROR=1)."""
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        yield
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ChainruleError) or _is_misconfiguration(cause):
            raise UserError(str(cause)) from (error if full else None)
        # Hydra's message: "Error in call to target 'x':\nTypeError(...)\nfull_key: y" -> one line.
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(f"cannot build from the config: {text}") from (error if full else None)
    except OSError as error:
        if error.errno not in WRITE_FAILURES:
            raise
        raise UserError(f"cannot write {error.filename or 'the run directory'}: {error.strerror}; free space "
                        f"or point the runs elsewhere with paths.log_dir=<folder>") from (error if full else None)
    except Exception as error:
        if isinstance(error, ChainruleError) or _is_misconfiguration(error):
            raise UserError(str(error)) from (error if full else None)
        raise


# A full disk, a quota, a read-only or forbidden folder: the run cannot write its files.
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _is_misconfiguration(error: BaseException | None) -> bool:
    """Lightning's MisconfigurationException, recognised without importing Lightning (it may not be
    loaded yet when a command is refused)."""
    return any(c.__name__ == "MisconfigurationException" for c in type(error).__mro__) if error else False


def protect_secrets(cfg: DictConfig) -> None:
    """Keep secrets out of this run's log file and the command line that loggers record, and make the
    values of `cfg`'s secret-named keys known to every later redaction (the run's record, checkpoints,
    logged hyperparameters, the console)."""
    remember_config_secrets(OmegaConf.to_container(cfg, resolve=True))
    redact_logging()
    redact_argv()


def execute(fn: Callable[[DictConfig], T], cfg: DictConfig, required: Sequence[str] | None = None,
            all_ranks: bool = True) -> T:
    """What every chainrule command does around its work `fn(cfg)`: secrets kept out of its files and
    logs, the config validated (`required`: the groups it builds; None: those of training) before any
    further rank starts and before the run is recorded in its directory, `fn` run on every rank of the
    run (or here only), the logger runs finished (marked failed on an exception), and a refusal shown as
    one `chainrule: error:` line (in a multirun, the job fails and the sweep goes on)."""
    try:
        with user_errors():
            protect_secrets(cfg)
            console.quiet_libraries()
            # Imported here: `--help`, `--cfg` and command-line errors answer without loading torch.
            from chainrule.config.validation import validate
            from chainrule.loggers.wandb import finishing_wandb_run

            validate(cfg, required=BUILT_GROUPS if required is None else required)
            console.quiet_libraries()  # again: Lightning, imported by now, adds a console handler of its own
            with ExitStack() as held:
                if detect_launch().rank == 0:
                    held.enter_context(recording_run(cfg))
                # The imports are done (see run()): what exists now lives for the whole run.
                gc.freeze()
                gc.enable()
                with finishing_wandb_run():
                    return on_all_ranks(fn, cfg) if all_ranks else fn(cfg)
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        console.error_line(str(error))
        raise SystemExit(2) from None


def run(app: Callable[[], object], config_name: str, argv: list[str] | None = None,
        required: tuple[str, ...] = ()) -> None:
    """Check the command line, then run a `hydra.main`-decorated `app` whose config is `config_name`
    (on this rank, when an external launcher started several: see chainrule.launch.run_id for what
    differs on ranks other than 0). `required`: keys the command line must set."""
    # Start-up imports (torch, Lightning) create hundreds of thousands of objects and no garbage: the
    # collector's passes over them would cost most of a second. It is back on when the work starts
    # (execute), and what exists at the end is frozen: the process's final collection need not walk it.
    gc.disable()
    try:
        _checked_run(app, config_name, sys.argv[1:] if argv is None else argv, required)
    finally:
        gc.freeze()
        gc.enable()


def _checked_run(app: Callable[[], object], config_name: str, argv: list[str], required: tuple[str, ...]) -> None:
    launch = detect_launch()
    prefix_console(launch.rank)
    try:
        check_group_choices(argv)
        # Hydra (and Lightning, when it starts more ranks) read sys.argv itself.
        argv = quote_paths(argv)
        argv = resume_arguments(argv, lambda: compose_job(config_name, argv).paths.runs_dir)
        sys.argv[1:] = argv = init_from_arguments(
            argv, lambda: compose_job(config_name, fixed_overrides(argv)).paths.log_dir)
        if not any(a.startswith("-") for a in argv):  # not --help, --cfg or a multirun: one run
            for key in required:
                if not any(a.startswith(f"{key}=") for a in argv):
                    raise ConfigError(f"{key} is missing: pass {key}=<value> (see {Path(sys.argv[0]).name} "
                                      f"--help)")
            preflight(config_name, argv, run_dir_check=launch.rank == 0)
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
