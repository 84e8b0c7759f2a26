"""What chainrule shows a person, in one place: every message goes through Python logging under the
`chainrule` logger, so the console and the run's log file (Hydra puts both handlers on the root logger)
receive the same lines, and only rank 0 speaks unless something is wrong on another rank.

- `say` and `warn`: messages of rank 0 (others are dropped: every rank would say the same).
- `error_line`: the one-line `chainrule: error: ...` of a refused command, printed before any logging
  exists (command-line checks) and wherever a command ends on a user error.
- `plain_console`: stdout for the commands that run without Hydra's logging.
- `render`: a rich table or tree as plain text, never wrapped, so that paths and commands stay whole
  on one line in a terminal, a pipe or a SLURM log.
"""

import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOGGER = logging.getLogger("chainrule")
# The variables a launcher sets for a rank (torchrun/chainrule: RANK; srun: SLURM_PROCID), read as
# Lightning's rank_zero_only does, without importing it (this module loads before torch).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def rank() -> int:
    for name in RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


def say(message: str) -> None:
    if rank() == 0:
        LOGGER.info(message)


def warn(message: str) -> None:
    if rank() == 0:
        LOGGER.warning(message)


def error_line(message: str) -> None:
    print(f"chainrule: error: {message}", file=sys.stderr, flush=True)


class _Stdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the message (a test's capture, a redirection)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@contextmanager
def plain_console() -> Iterator[None]:
    """Show messages on stdout, one line each, while a command that Hydra sets no logging up for runs
    (chainrule-submit, chainrule-sweep-report)."""
    handler = _Stdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = LOGGER.level, LOGGER.propagate
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.level, LOGGER.propagate = saved


def render(renderable: Any) -> str:
    """A rich renderable (Table, Tree) as plain text at its natural width: no wrapping, no colour codes."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(file=io.StringIO(), width=1000, color_system=None, highlight=False)
    width = Measurement.get(console, console.options, renderable).maximum
    console = Console(file=io.StringIO(), width=max(20, width), color_system=None, highlight=False)
    console.print(renderable)
    return console.file.getvalue().rstrip("\n")


# Messages that libraries print during a run and that tell a person nothing they can act on (chainrule
# says what matters itself: the devices in its header, where it resumes from, why training stopped).
SILENCED_WARNINGS = (
    r"The `srun` command is available on your system",  # chainrule detects SLURM launches itself
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning's own code
    r"`weights_only` was not set",  # chainrule's checkpoint reader always loads weights only
    r"Experiment logs directory .* exists and is not empty",  # the CSV logger continues a resumed run
    r"Trainer already configured with model summary callbacks",
    r"You're resuming from a checkpoint that ended before the epoch ended",  # the data resumes itself
    r".*does not have many workers which may be a bottleneck",  # in-memory data needs none
)
# Loggers whose informational lines (GPU/TPU availability, seeds, tips, "Restoring states ...") repeat
# what chainrule's header and summary say.
INFO_ONLY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.fabric.utilities.seed", "lightning.pytorch.utilities.seed")


def quiet_libraries() -> None:
    """Silence the library messages above, and let Lightning's remaining ones reach the console and the
    run's log file once: Lightning gives its logger a console handler of its own *and* lets records
    propagate to the root logger, which Hydra configures."""
    for pattern in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in INFO_ONLY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            library_logger = logging.getLogger(name)
            for handler in list(library_logger.handlers):
                if type(handler) is logging.StreamHandler:
                    library_logger.removeHandler(handler)
            # Imported before the root logger had handlers, Lightning also stopped its records there.
            library_logger.propagate = True
