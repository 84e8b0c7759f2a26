"""MLflow for chainrule runs: one MLflow run per run directory, in a local SQLite store by default.

- Store: `logger.mlflow.tracking_uri`, by default one SQLite file for all runs under the log directory,
  with artifacts beside it (conf/logger/mlflow.yaml); or any database or tracking server.
- Identity: the experiment is the run's `name`. The MLflow run id is kept in <run dir>/mlflow_run_id, so
  a run resumed in the same run directory (`resume=<run dir>`, a requeued job, also after a SIGKILL)
  continues the same MLflow run. A run is named after the experiment and its run directory, a multirun
  job after the overrides that set it apart (as for W&B); the jobs of a multirun share the tag `group`.
- Params: the config flattened to override keys (`optim.lr`); chainrule-train removes secrets first.
  MLflow never changes a param, so a value that a continuation changes (`trainer.max_epochs=30`) is the
  tag `changed.<key>`.
- Metrics: by step, on the step axis of the other loggers. A resumed run first deletes what the stopped
  run logged at the checkpoint's step or later (chainrule.callbacks.history): the resumed run logs those
  steps again, so the history equals an uninterrupted run's. Only a database store allows that; a
  tracking server keeps both values of those steps (a warning says so).
- Artifacts: at the end of fit and of test, the folders named in `artifacts` (the PNG plots, the run's
  .hydra record) and the resolved config as logged (`config/resolved.yaml`).
"""

import importlib.util
import inspect
import json
import logging
import shlex
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from chainrule.core import console
from chainrule.core.errors import ConfigError
from chainrule.loggers.wandb import flatten, server_reachable

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
RESOLVED_CONFIG = ("config", "resolved.yaml")  # artifact folder and file of the resolved config
CHANGED_PREFIX = "changed."
SERVER_SCHEMES = ("http", "https", "databricks")
QUIET_LIBRARY_LOGGERS = ("mlflow.store.db.utils", "alembic")
# MLflow's limits (mlflow.utils.validation): entities per log_batch call, characters of a param's value.
PER_BATCH = 100
MAX_PARAM_LENGTH = 6000


# --- where the runs are tracked --------------------------------------------------------------------
def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///...` tracking URI, else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in SERVER_SCHEMES


def is_local_path(location: str) -> bool:
    return urlparse(location).scheme in ("", "file")


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite store while it is opened, created or given an experiment.

    The first process to open a new SQLite file creates its tables; several opening it at once (the
    ranks of a DDP job, the jobs of a parallel sweep) race and all fail. Other stores need no lock.
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        yield
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        yield


def check_store(tracking_uri: str, artifact_location: str | None) -> None:
    """Refuse what cannot work before anything starts: no mlflow package, artifacts of a tracking
    server's experiment on this machine's disk (where the server's UI cannot show them), or a server that
    does not answer (MLflow would retry for minutes)."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("logger=mlflow needs the mlflow package: pip install 'chainrule[mlflow]' "
                          "(or choose another logger, e.g. logger=default)")
    if is_server(tracking_uri) and artifact_location is not None and is_local_path(artifact_location):
        raise ConfigError(f"logger.mlflow.artifact_location={artifact_location} is a folder on this machine, "
                          f"but runs are tracked by the server {tracking_uri}, whose UI could not show them: "
                          f"pass logger.mlflow.artifact_location=null (the server's choice) or a URI it can "
                          f"read (s3://...)")
    if urlparse(tracking_uri).scheme in ("http", "https") and not server_reachable(tracking_uri):
        raise ConfigError(f"the MLflow server {tracking_uri} is not reachable from this machine: check the "
                          f"address, or log to a local store (leave out logger.mlflow.tracking_uri)")


# --- run identity ----------------------------------------------------------------------------------
def run_id_path(run_dir: str | Path) -> Path:
    """Where the MLflow run id of the run writing into `run_dir` is kept."""
    return Path(run_dir) / RUN_ID_FILE


def stored_run_id(run_dir: str | Path) -> str | None:
    path = run_id_path(run_dir)
    return (path.read_text().strip() or None) if path.is_file() else None


def store_run_id(run_dir: str | Path, run_id: str) -> None:
    path = run_id_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(run_id + "\n")
    partial.replace(path)  # atomic: a kill never leaves an empty id that would start a second run


def run_name_and_group(experiment: str, run_dir: str, group: str | None, sweep_dir: str | None,
                       job_overrides: str) -> tuple[str, str | None]:
    """A run is named `<experiment> <run dir name>`; a multirun job `<experiment> <its overrides>`, in the
    group named after the sweep directory unless `group` is set (W&B's naming, chainrule.loggers.wandb)."""
    if sweep_dir is None:
        return f"{experiment} {Path(run_dir).name}", group
    name = f"{experiment} {job_overrides or Path(run_dir).name}"
    return name, group or f"{experiment}-{Path(sweep_dir).name}"


# --- params ----------------------------------------------------------------------------------------
def param_value(value: Any) -> str:
    """A config value as MLflow stores it (text): strings as they are, anything else as JSON, which
    writes null, true and lists as a Hydra override would."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def merged(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` merged in, nested mappings key by key."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = dict(value) if isinstance(value, Mapping) else value
    return result


def chunks(items: list[Any], size: int = PER_BATCH) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- rewinding a database store --------------------------------------------------------------------
def delete_metrics_from(store: Any, run_id: str, step: int) -> int | None:
    """Delete every metric value of `run_id` logged at `step` or later from a database store (MLflow's
    SqlAlchemyStore), and set each metric's latest value to the newest one left. Returns the number of
    values deleted, or None when the store is not a database (a tracking server): MLflow's API has no
    call that deletes metric values, so this goes through the store's own tables."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if not isinstance(store, SqlAlchemyStore):
        return None
    session_options = inspect.signature(store.ManagedSessionMaker).parameters
    writing = {"read_only": False} if "read_only" in session_options else {}  # older MLflow: always writable
    with store.ManagedSessionMaker(**writing) as session:
        values = session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id)
        deleted = values.filter(SqlMetric.step >= step).delete(synchronize_session=False)
        stale = session.query(SqlLatestMetric).filter(SqlLatestMetric.run_uuid == run_id,
                                                      SqlLatestMetric.step >= step).all()
        for latest in stale:
            # MLflow's "latest": the largest step, then the newest timestamp, then the largest value.
            newest = (values.filter(SqlMetric.key == latest.key)
                      .order_by(SqlMetric.step.desc(), SqlMetric.timestamp.desc(), SqlMetric.value.desc())
                      .first())
            if newest is None:
                session.delete(latest)
            else:
                latest.value, latest.timestamp = newest.value, newest.timestamp
                latest.step, latest.is_nan = newest.step, newest.is_nan
    return deleted


# --- the logger ------------------------------------------------------------------------------------
class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger with chainrule's run identity, resume, naming, params and artifacts; see
    the module docstring and conf/logger/mlflow.yaml.

    Lightning's falls short on each of these: it starts a new MLflow run in every process unless given a
    run id, truncates params at 250 characters and raises when a resumed run logs a changed one, flattens
    with `/` where chainrule's keys use `.`, cannot forget the values a stopped run logged after its
    checkpoint, uploads no files but checkpoints, and opens the store on every rank at once.

    experiment_name: the MLflow experiment (the run's `name`). tracking_uri: a database
    (`sqlite:///<file>`, `postgresql://...`) or a server (`http://host:5000`). artifact_location: where a
    new experiment keeps its artifacts (None: the store's choice). run_dir: the run directory, which keeps
    the MLflow run id. artifacts: artifact folder -> local folder uploaded at the end of fit and of test
    (a None or missing folder is skipped). tags: names tagged on the run. group: a tag shared by related
    runs. job_type, sweep_dir and job_overrides come from Hydra (chainrule.config.builders.hydra_job).
    """

    def __init__(
        self,
        experiment_name: str,
        tracking_uri: str,
        artifact_location: str | None,
        run_dir: str,
        artifacts: Mapping[str, str | None],
        tags: list[str] | None,
        group: str | None,
        job_type: str | None = None,
        sweep_dir: str | None = None,
        job_overrides: str = "",
    ):
        check_store(tracking_uri, artifact_location)
        run_name, group = run_name_and_group(experiment_name, run_dir, group, sweep_dir, job_overrides)
        # MLflow tags are key-value pairs; a run's tags are names, so each is a key with an empty value.
        run_tags = {**dict.fromkeys(tags or [], ""), "run_dir": str(run_dir)}
        run_tags.update({k: v for k, v in {"group": group, "job_type": job_type}.items() if v is not None})
        # MLflow announces creating or migrating a SQLite store's tables at INFO; the header names the store.
        for library in QUIET_LIBRARY_LOGGERS:
            logging.getLogger(library).setLevel(logging.WARNING)
        # Only rank 0 logs (Lightning's methods are rank-zero only), so only it continues a stored run.
        run_id = stored_run_id(run_dir) if rank_zero_only.rank == 0 else None
        with store_lock(tracking_uri):  # Lightning's constructor opens the store (on every rank)
            super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                             tags=run_tags, artifact_location=artifact_location, run_id=run_id,
                             log_model=False)
        self._run_dir = Path(run_dir)
        self._artifacts = dict(artifacts or {})
        self._config: dict[str, Any] = {}  # the hyperparameters as logged, nested: the resolved config
        self._params: dict[str, str] | None = None  # the run's params, read once it is open
        self._resumed = False

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The MlflowClient, with this job's MLflow run open (created, or the stored one continued) on
        rank 0; other ranks get a no-op stand-in."""
        if not self._initialized:
            with store_lock(self._tracking_uri):  # parallel jobs may create the same experiment
                self._open_run()
        return self._mlflow_client

    def _open_run(self) -> None:
        stored = self._run_id
        if stored is not None and not self._run_usable(stored):
            console.warn(f"MLflow run {stored} (in {run_id_path(self._run_dir)}) is not in "
                         f"{self._tracking_uri}; a new MLflow run starts there")
            self._run_id = None
        if self._run_id is None:
            self._experiment_id = self._experiment_to_use()
        client = super().experiment
        self._resumed = self._run_id == stored
        if self._resumed:
            client.update_run(stored, status="RUNNING")  # a killed, failed or finished run goes on
            self._params = dict(client.get_run(stored).data.params)
        else:
            store_run_id(self._run_dir, self._run_id)
            self._params = {}

    def _experiment_to_use(self) -> str:
        """The id of the experiment named `experiment_name`, created if needed (Lightning would do the
        same, with a warning that says nothing a user must act on)."""
        experiment = self._mlflow_client.get_experiment_by_name(self._experiment_name)
        if experiment is not None and experiment.lifecycle_stage != "deleted":
            return experiment.experiment_id
        return self._mlflow_client.create_experiment(self._experiment_name, self._artifact_location)

    def _run_usable(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self._mlflow_client.get_run(run_id).info.lifecycle_stage != "deleted"
        except MlflowException:
            return False

    def describe(self) -> str:
        """How this run logs to MLflow, in a few words for the run's header."""
        if not self._initialized:  # ranks other than 0, or nothing logged yet
            return f"MLflow ({self._tracking_uri})"
        return (f"MLflow, {'resumed' if self._resumed else 'new'} run {self._run_id} ({self._run_name}) "
                f"in {self._tracking_uri}")

    def finish_hint(self) -> str | None:
        """Where to see the run afterwards: its page on a tracking server, or the command that serves a
        database store."""
        if not self._initialized:
            return None
        if is_server(self._tracking_uri):
            page = f"#/experiments/{self._experiment_id}/runs/{self._run_id}"
            return f"MLflow run: {self._tracking_uri.rstrip('/')}/{page}"
        command = shlex.join(["mlflow", "ui", "--backend-store-uri", self._tracking_uri])
        return f"see MLflow run {self._run_id} (experiment {self._experiment_name}): {command}"

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Log `params` (nested) flattened to override keys. A key already logged keeps its value (MLflow
        never changes a param); a different later value becomes the tag `changed.<key>`."""
        from mlflow.entities import Param, RunTag

        params = vars(params) if not isinstance(params, Mapping) else params
        client = self.experiment
        self._config = merged(self._config, params)
        flat = {key: param_value(value)[:MAX_PARAM_LENGTH] for key, value in flatten(params).items()}
        new = [Param(key, value) for key, value in flat.items() if key not in self._params]
        changed = [RunTag(f"{CHANGED_PREFIX}{key}", value)
                   for key, value in flat.items() if key in self._params and self._params[key] != value]
        for batch in chunks(new):
            client.log_batch(run_id=self.run_id, params=batch)
        for batch in chunks(changed):
            client.log_batch(run_id=self.run_id, tags=batch)
        self._params.update({p.key: p.value for p in new})
        if changed:
            keys = ", ".join(t.key.removeprefix(CHANGED_PREFIX) for t in changed)
            log.info("MLflow: run %s keeps its first value of %s (changed values are tagged %s<key>)",
                     self.run_id, keys, CHANGED_PREFIX)

    @rank_zero_only
    def rewind(self, step: int) -> None:
        """Forget every metric value logged at `step` or later: the resumed run logs them again."""
        # MlflowClient's store: the API has no call to delete metric values, so the store's tables are used.
        store = self.experiment._tracking_client.store
        with store_lock(self._tracking_uri):
            deleted = delete_metrics_from(store, self.run_id, step)
        if deleted is None and self._resumed:  # a run new to this start holds nothing from an earlier one
            console.warn(f"MLflow: {self._tracking_uri} cannot delete metric values: the values run "
                         f"{self.run_id} logged at step {step} or later before it stopped stay, beside those "
                         f"the resumed run logs at the same steps")
        elif deleted:
            log.info("MLflow: run %s rewound to step %d (%d values logged after the checkpoint deleted)",
                     self.run_id, step, deleted)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Upload the artifacts, then mark the run finished or failed. Lightning calls this at the end of
        fit (after on_fit_end: the plots exist), of test, and on an exception."""
        if not self._initialized:
            return
        from mlflow.exceptions import MlflowException

        try:
            self._upload_artifacts()
        except (MlflowException, OSError) as error:  # a failed upload must not hide the run's own outcome
            console.warn(f"MLflow: could not upload the artifacts of run {self.run_id}: {error}")
        super().finalize(status)

    def _upload_artifacts(self) -> None:
        for artifact_path, folder in self._artifacts.items():
            if folder and Path(folder).is_dir() and any(Path(folder).iterdir()):
                self.experiment.log_artifacts(self.run_id, str(folder), artifact_path)
        if self._config:
            folder, name = RESOLVED_CONFIG
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / name
                path.write_text(yaml.safe_dump(self._config, sort_keys=False, default_flow_style=False))
                self.experiment.log_artifact(self.run_id, str(path), folder)

