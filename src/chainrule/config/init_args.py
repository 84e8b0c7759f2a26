"""The command-line half of `init_from=latest`: the newest checkpoint is looked up once, when the command
starts, and the command line names that file from then on.

So every job of a multirun (each fold of `-m init_from=latest data.folds=5 'data.fold=range(0,5)'`) starts
from the same weights, not from the job before it; and the run's record, which a resume reuses, names the
checkpoint the run really started from.
"""

from collections.abc import Callable
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from chainrule.config.command_line import quote, unquote

KEY = "init_from"
LATEST = "latest"


def init_from_arguments(argv: list[str], log_dir: Callable[[], Path]) -> list[str]:
    """`argv` with `init_from=latest` replaced by the checkpoint it means now (the newest intact one of the
    newest run under `log_dir()`, asked only then); other command lines unchanged."""
    given = [a for a in argv if a.startswith(f"{KEY}=")]
    if not given or unquote(given[-1].split("=", 1)[1]) != LATEST:
        return argv
    from chainrule.checkpointing.discovery import checkpoint_to_use  # loads torch: only when needed

    path = checkpoint_to_use(LATEST, log_dir(), key=KEY)
    return [f"{KEY}={quote(str(path))}" if a == given[-1] else a for a in argv]


def fixed_overrides(argv: list[str]) -> list[str]:
    """The overrides of `argv` that set one value (a multirun's swept ones left out), for composing the
    paths a command line means."""
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except OverrideParseException:
        return [a for a in argv if not a.startswith("-")]
    return [o.input_line for o in parsed if not o.is_sweep_override()]
