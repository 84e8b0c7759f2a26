"""A run directory's record of what ran in it (`.hydra/`: config.yaml, hydra.yaml, overrides.yaml), and
the rule that keeps one directory to one run.

Hydra writes these files itself before a command's code runs, so a command pointed at another run's
directory would overwrite that run's record before anything could refuse it. chainrule writes them
instead (`hydra.output_subdir: null`), after checking: a directory that holds a run takes only a
continuation of that run: the same overrides, except those that a continuation may change (how long to
train, on which devices, what to log). Anything else is refused, and nothing in the directory changes.
Secrets never reach these files (chainrule.core.secrets).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from chainrule.config.run_lock import hold_run_dir, release_run_dir
from chainrule.core.errors import ConfigError
from chainrule.core.secrets import COMPOSABLE, is_secret_key, redact, redact_text
from chainrule.core.training_length import TRAINING_LIMITS

RECORD_DIR = ".hydra"
OVERRIDES = "overrides.yaml"
# Keys a continuation of a run may set differently from the run's start: training length, hardware,
# what is shown and logged, and where things are. Prefixes cover a group's keys.
CONTINUATION_KEYS = (
    *TRAINING_LIMITS, "trainer.devices", "trainer.num_nodes",
    "trainer.accelerator", "trainer.strategy", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.plugins", "data.num_workers", "data.persistent_workers",
    "data.pin_memory", "data.prefetch_factor", "data.on_device", "logger", "callbacks", "paths", "hydra",
    "resume", "ckpt_path", "print_config", "cluster",
)


NOT_SETTINGS = ("resume", "hydra.run.dir")


def saved_overrides(run_dir: str | Path) -> list[str] | None:
    """The overrides of the run recorded in `run_dir`, or None when no run is recorded there."""
    path = Path(run_dir) / RECORD_DIR / OVERRIDES
    return (yaml.safe_load(path.read_text()) or []) if path.is_file() else None


def override_key(override: str) -> str:
    try:
        return OverridesParser.create().parse_overrides([override])[0].key_or_group
    except (OverrideParseException, IndexError):
        return override.split("=", 1)[0].lstrip("+~")


def _values(overrides: list[str]) -> dict[str, str]:
    return {override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in overrides}


def is_continuation_key(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") or key.startswith(f"{k}/") for k in CONTINUATION_KEYS)


def conflicts(saved: list[str], given: list[str]) -> list[str]:
    """`key: saved value -> given value` for every override that a continuation may not change."""
    before, now = _values(saved), _values(given)
    return [f"{key}: {before.get(key, '(default)')} -> {now.get(key, '(default)')}"
            for key in sorted(set(before) | set(now))
            if before.get(key) != now.get(key) and not is_continuation_key(key) and not is_secret_key(key)]


def settings(overrides: list[str]) -> list[str]:
    """The overrides that are a run's settings: without secrets (never written down) and without where
    the run lies and how it was reached (a moved run directory resumes too)."""
    return [o for o in overrides if not o.startswith("-")
            and not is_secret_key(override_key(o)) and override_key(o) not in NOT_SETTINGS]


def check_run_dir(run_dir: str | Path, overrides: list[str]) -> None:
    """Refuse to run `overrides` in `run_dir` when it holds a run with other settings."""
    saved = saved_overrides(run_dir)
    if saved is None:
        return
    changed = conflicts(saved, settings(overrides))
    if changed:
        raise ConfigError(
            f"{run_dir} holds a run with other settings ({'; '.join(changed)}); a run directory holds one "
            f"run. Start a new run without hydra.run.dir (or with another one), or continue that run "
            f"unchanged: chainrule-train resume={run_dir}"
        )


@contextmanager
def recording_run(cfg: DictConfig) -> Iterator[None]:
    """Write (or update) the record of this run in its run directory, once check_run_dir passes, and hold
    the directory for this process until the context ends (chainrule.config.run_lock).

    Enter on rank 0 before anything else writes into the run directory.
    """
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    given = settings(list(hydra.overrides.task))
    check_run_dir(run_dir, given)
    folder = run_dir / RECORD_DIR
    hold_run_dir(run_dir, folder)
    try:
        _write_record(cfg, hydra, folder, given)
        yield
    finally:
        release_run_dir(run_dir)


def _write_record(cfg: DictConfig, hydra: DictConfig, folder: Path, given: list[str]) -> None:
    # Secret-named keys are left out above and redacted below; secrets from the environment are written
    # as `${oc.env:NAME}`, so that composing the record again reads them from the environment.
    config = redact(OmegaConf.to_container(cfg, resolve=False), COMPOSABLE)
    files = {"config.yaml": OmegaConf.to_yaml(config), "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra}),
             OVERRIDES: yaml.safe_dump(given, default_flow_style=False)}
    for name, text in files.items():
        _write_atomically(folder / name, redact_text(text, template=COMPOSABLE))


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text)
    temporary.replace(path)
