"""The command-line half of resuming: `resume=<run dir>` expands into that run's own overrides.

Kept apart from chainrule.training.fitting so that the command line is checked before torch and Lightning load.
"""

from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from chainrule.core.errors import CheckpointError, ConfigError


def resume_arguments(argv: list[str]) -> list[str]:
    """Expand `resume=<run dir>` into the run's saved overrides, the ones given now (which win), and
    `hydra.run.dir=<run dir>`. Other command lines are returned unchanged."""
    given = [a for a in argv if a.startswith("resume=")]
    if not given or given[-1] in ("resume=", "resume=null"):
        return argv
    value = given[-1].split("=", 1)[1]
    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError("resume= continues one run; it cannot be combined with --multirun")
    run_dir = Path(value).expanduser().resolve()
    if not run_dir.is_dir():
        raise CheckpointError(
            f"resume={value}: no such run directory; pass the directory a run wrote "
            f"(it holds .hydra/ and checkpoints/)"
        )
    saved_file = run_dir / ".hydra" / "overrides.yaml"
    if not saved_file.is_file():
        raise CheckpointError(
            f"resume={value}: {run_dir} is not a chainrule run directory (no "
            f".hydra/overrides.yaml); pass the directory a run wrote"
        )
    saved = yaml.safe_load(saved_file.read_text()) or []
    given_keys = {_key(a) for a in argv if not a.startswith("-")}
    kept = [o for o in saved if _key(o) not in given_keys | {"resume"}]
    at = argv.index(given[-1])
    # Kept next to the user's own overrides: argparse takes overrides only as one contiguous group.
    return [*argv[:at], *kept, given[-1], f"hydra.run.dir={run_dir}", *argv[at + 1 :]]


def _key(override: str) -> str:
    try:
        return OverridesParser.create().parse_overrides([override])[0].key_or_group
    except (OverrideParseException, IndexError):
        return override.split("=", 1)[0].lstrip("+~")
