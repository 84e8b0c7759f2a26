"""Weights & Biases for chainrule runs, right by default on clusters and laptops alike.

- Mode: online only with credentials and a reachable server, else offline into <run dir>/wandb; W&B
  never prompts for a login. An offline run ends by printing the `wandb sync` command that uploads it.
- Identity: one W&B run per job (Lightning creates it on rank 0 only). Its id is stored in
  <run dir>/wandb_run_id, so a run resumed in the same run directory continues the same W&B run.
- Sweeps: the jobs of one multirun share a W&B group, and each job's name lists its overrides.
- The config is logged flattened (`optim.lr`); chainrule-train removes secrets from it first.
- `watch` attaches W&B's own gradient hooks (off by default: callbacks.gradient_histograms is cheaper).
"""

import logging
import netrc
import os
import secrets
import shlex
import socket
import string
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from chainrule.core.errors import ConfigError, unknown_choice

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
WATCH = ("gradients", "parameters", "all")
DEFAULT_BASE_URL = "https://api.wandb.ai"


# --- mode ------------------------------------------------------------------------------------------
def base_url(environ: Mapping[str, str]) -> str:
    return environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def credentials_source(environ: Mapping[str, str]) -> str | None:
    """Where W&B would take an API key from: "WANDB_API_KEY", the path of a netrc file with an entry for
    the W&B host (what `wandb login` writes), or None when there is none."""
    if environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    home = Path(environ.get("HOME") or Path.home())
    path = Path(environ["NETRC"]) if environ.get("NETRC") else home / ".netrc"
    try:
        host = urlparse(base_url(environ)).hostname
        entry = netrc.netrc(path).authenticators(host) if path.is_file() else None
    except (netrc.NetrcParseError, OSError):
        entry = None
    return str(path) if entry and entry[2] else None


def server_reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the W&B server opens; compute nodes often have no route out."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_mode(requested: str, environ: Mapping[str, str], reachable: Callable[[], bool]) -> tuple[str, str]:
    """The W&B mode to run in for `requested` (one of MODES), and the reason, as shown to the user.

    `auto` follows WANDB_MODE when set, else runs online only with credentials and a reachable server
    (`reachable` is only called then). Online without credentials is an error, never a login prompt.
    """
    if requested not in MODES:
        raise unknown_choice("logger.wandb.mode", requested, list(MODES))
    source = credentials_source(environ)
    env_mode = environ.get("WANDB_MODE", "")
    env_mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)  # W&B's older names
    if requested != "auto":
        mode, reason = requested, f"logger.wandb.mode={requested}"
    elif env_mode in MODES[1:]:
        mode, reason = env_mode, f"WANDB_MODE={environ['WANDB_MODE']}"
    elif source is None:
        host = urlparse(base_url(environ)).hostname
        return "offline", f"no W&B credentials: neither WANDB_API_KEY nor a netrc entry for {host}"
    elif not reachable():
        return "offline", f"{base_url(environ)} is not reachable from this machine"
    else:
        return "online", f"credentials from {source}"
    if mode == "online" and source is None:
        raise ConfigError("W&B online mode needs credentials: set WANDB_API_KEY or run `wandb login`, "
                          "or log offline with logger.wandb.mode=offline (upload later with `wandb sync`)")
    return mode, reason


# --- run identity ----------------------------------------------------------------------------------
def run_id_path(save_dir: str | Path) -> Path:
    """Where the W&B run id of the run writing into `save_dir` (its run directory) is kept; the SLURM job
    script (slurm/templates/train.sbatch) keeps it in the same file."""
    return Path(save_dir) / "wandb_run_id"


def stored_or_new_run_id(save_dir: str | Path, environ: Mapping[str, str]) -> tuple[str, bool]:
    """The W&B run id for `save_dir` and whether it was already stored (the run is being resumed).

    A new id is WANDB_RUN_ID when set (W&B's sweep agent sets it), else random, and is stored at once.
    """
    path = run_id_path(save_dir)
    stored = path.read_text().strip() if path.is_file() else ""
    if stored:
        return stored, True
    # `secrets`, not `random`: the global RNG is seeded for training and must not move.
    alphabet = string.ascii_lowercase + string.digits
    run_id = environ.get("WANDB_RUN_ID") or "".join(secrets.choice(alphabet) for _ in range(8))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(run_id + "\n")
    partial.replace(path)  # atomic: a crash never leaves an empty id that would start a second run
    return run_id, False


# --- config ----------------------------------------------------------------------------------------
def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (`optim.lr`), the form Hydra overrides use."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# --- the logger ------------------------------------------------------------------------------------
class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with chainrule's mode choice, stored run identity, sweep naming,
    flattened config and gradient histograms. See the module docstring and conf/logger/wandb.yaml.

    mode: auto | online | offline | disabled. watch: gradients | parameters | all | None, logged every
    `watch_log_freq` backward passes. flush_interval_s: seconds between writes of the run's `.wandb`
    file, the most history a job killed without warning loses. job_type, sweep_dir and job_overrides
    come from Hydra (chainrule.config.builders.hydra_job): a job of a multirun (sweep_dir set) gets `group` (when
    None) from the sweep directory and its overrides appended to `name`. Other keyword arguments go to
    `wandb.init`.
    """

    def __init__(
        self,
        save_dir: str,
        project: str,
        name: str,
        mode: str,
        watch: str | None,
        watch_log_freq: int,
        flush_interval_s: float,
        tags: list[str] | None,
        group: str | None,
        entity: str | None,
        job_type: str | None = None,
        sweep_dir: str | None = None,
        job_overrides: str = "",
        **kwargs: Any,
    ):
        if watch is not None and watch not in WATCH:
            raise unknown_choice("logger.wandb.watch", watch, [*WATCH, "null"])
        if watch_log_freq < 1:
            raise ConfigError(f"logger.wandb.watch_log_freq must be a positive number of backward passes, "
                              f"got {watch_log_freq}")
        if flush_interval_s < 0:
            raise ConfigError(f"logger.wandb.flush_interval_s must be >= 0 seconds, got {flush_interval_s}")
        if sweep_dir is not None:
            group = group or f"{name}-{Path(sweep_dir).name}"
            name = f"{name} {job_overrides}" if job_overrides else name
        else:  # the run directory's name is the run's id: time, SLURM job or launcher id
            name = f"{name} {Path(save_dir).name}"
        run_id, resumed, reason = None, False, ""
        if rank_zero_only.rank == 0:  # other ranks never create a W&B run, so they need neither mode nor id
            mode, reason = choose_mode(mode, os.environ, lambda: server_reachable(base_url(os.environ)))
            if mode != "disabled":
                run_id, resumed = stored_or_new_run_id(save_dir, os.environ)
        # silent: W&B's own banner, hints and sparkline summary repeat what chainrule's header and summary
        # say (and its `wandb leet` hint does not work from where the user stands).
        settings = {**kwargs.pop("settings", {}), "x_transaction_log_flush_interval": flush_interval_s,
                    "silent": True}
        # `mode` goes to wandb.init: Lightning's `offline=True` would set WANDB_MODE for the whole process.
        super().__init__(save_dir=save_dir, project=project, name=name, id=run_id, tags=tags, group=group,
                         job_type=job_type, entity=entity, mode=mode, settings=settings, **kwargs)
        self._wandb_init.pop("anonymous", None)  # Lightning passes it; W&B warns that it is gone
        self._watch = watch
        self._watch_log_freq = watch_log_freq
        self._watched = False
        self._description = (f"W&B {mode}, {'resumed' if resumed else 'new'} run {run_id} ({reason})"
                             if run_id is not None else f"W&B disabled ({reason})")

    def describe(self) -> str:
        """How this run logs to W&B, in a few words for the run's header."""
        return self._description

    def finish_hint(self) -> str | None:
        """What to do with the run afterwards: the command that uploads an offline run (all its pieces,
        when it was resumed), or the run's page."""
        run = self._experiment  # None before the run started, and on ranks other than 0
        if run is None or not hasattr(run, "settings"):
            return None
        if run.offline:
            return "upload the W&B run: " + sync_command(Path(run.settings.sync_dir).parent, run.id)
        return f"W&B run: {run.url}"

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run of this job, created on first use (rank 0 only; other ranks get a no-op stand-in)."""
        if self._experiment is None:
            import wandb

            # Lightning would log into any run still open in this process, e.g. the previous job's when
            # one process runs several (a multirun, tests): close that run instead.
            if wandb.run is not None and wandb.run.id != self._id:
                wandb.run.finish()
            _apply_launch_inputs_only_when_staged(wandb)
        return super().experiment

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        params = vars(params) if not isinstance(params, Mapping) else params
        super().log_hyperparams(flatten(params))

    @rank_zero_only
    def log_graph(self, model: nn.Module, input_array: Any = None) -> None:
        """Lightning hands every logger the model after the strategy has set it up, once per fit or test:
        the moment to attach W&B's gradient hooks (once)."""
        if self._watch is None or self._watched or self._wandb_init.get("mode") == "disabled":
            return
        # W&B logs parameters from a forward hook, which fires only on the module training calls: the task's
        # `model` (Task.training_step calls self.model, never the LightningModule itself).
        inner = getattr(model, "model", None)
        target = inner if isinstance(inner, nn.Module) else model
        # idx=0 keeps names free of a `graph_<n>` prefix when one process runs several jobs (multirun).
        self.experiment.watch(target, log=self._watch, log_freq=self._watch_log_freq, idx=0, log_graph=False)
        self._watched = True


def _apply_launch_inputs_only_when_staged(wandb: Any) -> None:
    """Every W&B run start imports wandb.sdk.launch (about 1.2 s, a third of chainrule's start-up) to apply
    inputs that a W&B Launch job may have staged. Staging them imports wandb.sdk.launch.inputs.internal
    first, so while that module is not loaded there is nothing to apply and the import is skipped."""
    run_class = wandb.sdk.wandb_run.Run
    apply = run_class._detect_and_apply_job_inputs
    if getattr(apply, "only_when_staged", False):
        return

    def apply_when_staged(run: Any) -> None:
        if STAGED_LAUNCH_INPUTS in sys.modules:
            apply(run)

    apply_when_staged.only_when_staged = True  # type: ignore[attr-defined]
    run_class._detect_and_apply_job_inputs = apply_when_staged


STAGED_LAUNCH_INPUTS = "wandb.sdk.launch.inputs.internal"


# --- the end of a job ------------------------------------------------------------------------------
def finish_active_run(exit_code: int) -> None:
    """Finish this process's W&B run, if any: a non-zero `exit_code` marks it failed, and then the command
    that uploads an offline run is said here (a run that ended well says it in its summary)."""
    wandb = sys.modules.get("wandb")  # never imported: no run to finish
    run = getattr(wandb, "run", None)
    if run is None:
        return
    offline, run_id, sync_dir = run.offline, run.id, Path(run.settings.sync_dir)
    run.finish(exit_code=exit_code)
    if exit_code and offline:
        log.info("upload the W&B run: %s", sync_command(sync_dir.parent, run_id))


def sync_command(wandb_dir: Path, run_id: str) -> str:
    """`wandb sync` of every offline piece of run `run_id` in `wandb_dir` (one per start of a resumed run)."""
    return shlex.join(["wandb", "sync", *map(str, sorted(wandb_dir.glob(f"offline-run-*-{run_id}")))])


def _let_go_of_the_service() -> None:
    """Close the connection to W&B's service process when that process is gone (SIGTERM reaches every
    process of a SLURM job step): W&B's own exit hook would otherwise fail on it with a traceback."""
    try:
        sys.modules["wandb"].teardown()
    except Exception:  # the service is gone; its exit hook is unregistered all the same
        pass


@contextmanager
def finishing_wandb_run() -> Iterator[None]:
    """Finish the W&B run when the block ends: failed (exit code 1) on an exception, else finished.

    Without this, W&B finishes at interpreter exit, and the next job of a multirun running in the same
    process would log into the previous job's run.
    """
    try:
        yield
    except BaseException as error:
        failed = not (isinstance(error, SystemExit) and error.code in (None, 0))
        try:
            finish_active_run(exit_code=1 if failed else 0)
        except Exception as finish_error:  # the original error is the one the user must see
            log.warning("could not finish the W&B run (%s): what it recorded stays in its wandb/ folder",
                        str(finish_error) or type(finish_error).__name__)
            _let_go_of_the_service()
        raise
    finish_active_run(exit_code=0)
