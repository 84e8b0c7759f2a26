"""User-facing errors: each names the problem and the fix, and is shown without a traceback."""


class ChainruleError(Exception):
    """A problem with the user's input (config, data, checkpoint) that they can fix.

    The entry points print the message alone and exit non-zero; set HYDRA_FULL_ERROR=1 for the traceback.
    """


class ConfigError(ChainruleError):
    """The composed configuration asks for something impossible or inconsistent."""


class DataNotFoundError(ChainruleError):
    """A dataset's files are not where the config says."""


class CheckpointError(ChainruleError):
    """A checkpoint is missing, unreadable or not written by chainrule."""


def unknown_choice(kind: str, name: str, choices: list[str]) -> ConfigError:
    """The error for a name that is not among the valid choices (sorted in the message)."""
    return ConfigError(f"unknown {kind} '{name}'; choose one of: {', '.join(sorted(choices))}")
