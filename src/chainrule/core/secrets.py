"""Keeping secrets out of what a run writes: configs, logs, checkpoints, hyperparameters, command lines.

A secret is the value of a config key whose name says it is one (`logger.mlflow.api_key`, `token`,
`password`), or the value of an environment variable whose name says it is one (`WANDB_API_KEY`,
`HF_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `DB_PASSWORD`, ...). Wherever chainrule writes or prints the config,
a logger records the command line, or a log line passes, these values are replaced: a config secret by
`<redacted>`; an environment secret by `<secret $NAME>`, or by `${oc.env:NAME}` where the text is
composed again later (the run's record, the command line), so that a resumed run reads the value from the
environment instead of a file.
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

SHOWN = "<secret ${name}>"
COMPOSABLE = "${{oc.env:{name}}}"
REDACTED = "<redacted>"

# Values of secret-named config keys of this process's run: {value: key} (see remember_config_secrets).
_config_secrets: dict[str, str] = {}


def is_secret_key(key: str) -> bool:
    """Whether a config key (`logger.mlflow.token`, `api_key`) names a secret, by any of its parts."""
    return any(SECRET_NAME.search(part) for part in str(key).split("."))


def secrets_in_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{value: name} of the environment's secret values."""
    environ = os.environ if environ is None else environ
    return {value: name for name, value in environ.items()
            if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH}


def remember_config_secrets(config: Any, prefix: str = "") -> None:
    """Note the values of `config`'s secret-named keys (a plain nested dict), so that every later
    redaction in this process finds them in any text, as it finds the environment's."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            name = f"{prefix}{key}"
            if is_secret_key(str(key)) and isinstance(value, (str, int)) and len(str(value)) >= MIN_SECRET_LENGTH:
                _config_secrets[str(value)] = name
            else:
                remember_config_secrets(value, f"{name}.")
    elif isinstance(config, (list, tuple)):
        for value in config:
            remember_config_secrets(value, prefix)


def known_secrets() -> dict[str, str]:
    """{value: template} for every secret this process knows, longest first (none is half-replaced)."""
    known = {value: REDACTED for value in _config_secrets}
    known.update({value: name for value, name in secrets_in_environment().items()})
    return dict(sorted(known.items(), key=lambda item: -len(item[0])))


def redact_text(text: str, template: str = SHOWN) -> str:
    """`text` with every known secret replaced: an environment one by `template` (formatted with its
    variable's name), a config one by `<redacted>`."""
    for value, name in known_secrets().items():
        text = text.replace(value, REDACTED if name == REDACTED else template.format(name=name))
    return text


def redact(obj: Any, template: str = SHOWN) -> Any:
    """A copy of nested dicts/lists/tuples without secrets: every value under a secret-named key is
    `<redacted>`, and every known secret inside a string is replaced (see redact_text)."""
    if isinstance(obj, str):
        return redact_text(obj, template)
    if isinstance(obj, Mapping):
        return {redact(k, template): REDACTED if is_secret_key(k) and v not in (None, "") else redact(v, template)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, template) for v in obj)
    return obj


def redact_argv() -> None:
    """Replace the secrets in `sys.argv`, which W&B records with the run, once Hydra has parsed it:
    environment secrets by `${oc.env:NAME}` (ranks started again from it read them from the environment
    they inherit), config secrets by `<redacted>`."""
    sys.argv[1:] = [redact_text(arg, COMPOSABLE) for arg in sys.argv[1:]]


class RedactingFilter(logging.Filter):
    """Removes secrets from log records before any handler (console, the run's log file) formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if known_secrets():
            record.msg = redact_text(record.getMessage())
            record.args = None
        return True


def redact_logging() -> None:
    """Attach a RedactingFilter to every handler of the root logger (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
