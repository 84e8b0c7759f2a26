"""Keeping secrets out of what a run writes: configs, logs, checkpoints, hyperparameters.

A secret is the value of a config key whose name says it is one (`logger.mlflow.api_key`, `token`,
`password`), or the value of an environment variable whose name says it is one (`WANDB_API_KEY`, `HF_TOKEN`,
`AWS_SECRET_ACCESS_KEY`, `DB_PASSWORD`, ...). Such values reach a run's files through the config (an
`${oc.env:...}` interpolation, or the value typed on the command line). Wherever chainrule writes or
prints the config they are replaced: by `<secret $NAME>` in checkpoints, logged hyperparameters and
logs, and by `${oc.env:NAME}` in Hydra's saved config files, so that composing those again (as
`resume=<run dir>` does) reads the value from the environment instead of the file.
"""

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

SECRET_NAME = re.compile(
    r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?)(_|$)", re.I
)
# Shorter values ("1", "true") are too common to replace everywhere they occur.
MIN_SECRET_LENGTH = 6


def secrets_in_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{value: name} of the environment's secret values, longest first (so no secret is half-replaced)."""
    environ = os.environ if environ is None else environ
    found = {
        value: name
        for name, value in environ.items()
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH
    }
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


SHOWN = "<secret ${name}>"
COMPOSABLE = "${{oc.env:{name}}}"


def redact_text(text: str, secrets: Mapping[str, str] | None = None, template: str = SHOWN) -> str:
    for value, name in (secrets_in_environment() if secrets is None else secrets).items():
        text = text.replace(value, template.format(name=name))
    return text


REDACTED = "<redacted>"


def is_secret_key(key: str) -> bool:
    """Whether a config key (`logger.mlflow.token`, `api_key`) names a secret, by any of its parts."""
    return any(SECRET_NAME.search(part) for part in str(key).split("."))


def redact(obj: Any, secrets: Mapping[str, str] | None = None) -> Any:
    """A copy of nested dicts/lists/tuples without secrets: every value under a secret-named key is
    `<redacted>`, and every secret of the environment inside a string is replaced."""
    secrets = secrets_in_environment() if secrets is None else secrets
    if isinstance(obj, str):
        return redact_text(obj, secrets) if secrets else obj
    if isinstance(obj, Mapping):
        return {redact(k, secrets): REDACTED if is_secret_key(k) and v not in (None, "") else redact(v, secrets)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    return obj


def redact_argv() -> None:
    """Replace secrets typed on the command line by `${oc.env:NAME}` in `sys.argv`, which W&B records
    with the run. Hydra has parsed it already; Lightning reuses it to start more ranks, which then read
    the same value from the environment they inherit."""
    secrets = secrets_in_environment()
    if secrets:
        sys.argv[1:] = [redact_text(arg, secrets, COMPOSABLE) for arg in sys.argv[1:]]


class RedactingFilter(logging.Filter):
    """Removes secrets from log records before any handler (console, the run's log file) formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secrets_in_environment()
        if secrets:
            record.msg = redact_text(record.getMessage(), secrets)
            record.args = None
        return True


def redact_logging() -> None:
    """Attach a RedactingFilter to every handler of the root logger (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
