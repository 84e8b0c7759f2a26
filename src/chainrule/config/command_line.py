"""Command-line values as Hydra reads them: a path is one value, whatever characters it holds."""

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

# Keys whose values are paths, which may hold spaces, quotes, `=`, commas or any script.
PATH_KEYS = ("ckpt_path", "resume", "init_from", "inputs", "output", "hydra.run.dir", "hydra.sweep.dir")


def quote(value: str) -> str:
    """`value` as one quoted Hydra override value (Hydra's grammar escapes quotes with a backslash)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("\\" + value[0], value[0]).replace("\\\\", "\\")
    return value


def quote_paths(argv: list[str]) -> list[str]:
    """`argv` with every path value that Hydra's grammar would not read as one value (a space, a
    non-ASCII letter, a quote, ...) quoted, so that `ckpt_path=/runs/my run/last.ckpt` works as typed."""
    return [_quoted(arg) for arg in argv]


def _quoted(arg: str) -> str:
    key, sep, value = arg.partition("=")
    if not sep or not (key.lstrip("+~") in PATH_KEYS or key.lstrip("+~").startswith("paths.")):
        return arg
    try:
        OverridesParser.create().parse_overrides([arg])
        return arg
    except OverrideParseException:
        return f"{key}={quote(unquote(value))}"
