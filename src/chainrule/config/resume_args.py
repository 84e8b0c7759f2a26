"""The command-line half of resuming: `resume=<run dir>` (or `resume=latest`) expands into that run's own
overrides and its directory.

Kept apart from chainrule.training.fitting so that the command line is checked before torch and
Lightning load.
"""

from collections.abc import Callable
from pathlib import Path

from chainrule.config.command_line import quote, unquote
from chainrule.config.run_record import conflicts, override_key, saved_overrides
from chainrule.core.errors import CheckpointError, ConfigError

LATEST = "latest"


def resume_arguments(argv: list[str], runs_dir: Callable[[], Path]) -> list[str]:
    """Expand `resume=<run dir>` into the run's saved overrides, the ones given now (which win; only
    those a continuation may change), and `hydra.run.dir=<run dir>`. `resume=latest` is the newest run
    in `runs_dir()` (asked only then). Other command lines are returned unchanged."""
    given = [a for a in argv if a.startswith("resume=")]
    if not given or given[-1] in ("resume=", "resume=null"):
        return argv
    value = unquote(given[-1].split("=", 1)[1])
    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError("resume= continues one run; it cannot be combined with --multirun")
    run_dir = latest_run(runs_dir()) if value == LATEST else Path(value).expanduser().resolve()
    if not run_dir.is_dir():
        raise CheckpointError(
            f"resume={value}: no such run directory; pass the directory a run wrote "
            f"(it holds .hydra/ and checkpoints/), or resume=latest"
        )
    saved = saved_overrides(run_dir)
    if saved is None:
        raise CheckpointError(
            f"resume={value}: {run_dir} is not a chainrule run directory (no "
            f".hydra/overrides.yaml); pass the directory a run wrote"
        )
    # The run's own directory replaces one given (an expanded command line, run again by a rank).
    argv = [a for a in argv if not a.startswith("hydra.run.dir=")]
    at = argv.index(given[-1])
    others = [a for a in argv if a != given[-1] and not a.startswith("-") and ("=" in a or a.startswith("~"))]
    given_keys = {override_key(a) for a in others}
    kept = [o for o in saved if override_key(o) not in given_keys | {"resume"}]
    changed = conflicts(saved, [*kept, *others])
    if changed:
        raise ConfigError(
            f"resume={value}: a run continues with its own settings, but this command changes "
            f"{'; '.join(changed)}; drop those overrides, or start a new run without resume="
        )
    # Quoted for Hydra, so that any path (spaces, quotes, any script) is one value. Kept next to the
    # user's own overrides: argparse takes overrides only as one contiguous group.
    return [*argv[:at], *kept, f"resume={quote(str(run_dir))}", f"hydra.run.dir={quote(str(run_dir))}",
            *argv[at + 1:]]


def latest_run(runs_dir: Path) -> Path:
    """The newest run directory in `runs_dir` (by the time its record was written)."""
    runs = [p for p in Path(runs_dir).glob("*") if saved_overrides(p) is not None]
    if not runs:
        raise CheckpointError(f"resume=latest: {runs_dir} holds no run yet; train one first, or pass "
                              f"resume=<run dir>")
    return max(runs, key=lambda p: (p / ".hydra" / "overrides.yaml").stat().st_mtime_ns).resolve()
