"""Where a study lives and how the processes that share it stay out of each other's way.

A study is a row set in a database that every worker and every trial process opens by URL: the sweeper
asks and tells trials, each trial's pruning callback writes its per-epoch values. A worker keeps a
heartbeat for the trials it runs, so that when a worker dies its trials are found stale, marked failed
and queued again.
"""

import fcntl
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

DEFAULT_DB = "optuna.db"
# SQLite serializes writers; several workers and their trials write now and then, so wait for the lock
# instead of failing with "database is locked" after SQLite's default 5 s.
SQLITE_TIMEOUT_S = 60


def default_url(sweep_dir: str | Path) -> str:
    """The SQLite file that holds a study when no storage URL is configured."""
    return f"sqlite:///{Path(sweep_dir).resolve() / DEFAULT_DB}"


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
                 ) -> RDBStorage:
    """An RDB storage (SQLite file or any SQLAlchemy URL, e.g. postgresql://user@host/db).

    With `heartbeat_interval` (seconds), running trials whose worker has not beaten for `grace_period`
    (default 2 x interval) are stale: `fail_stale` marks them failed and queues their parameters again
    (once per trial).
    """
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1)
            if heartbeat_interval else None,
        )


def fail_stale(study: optuna.Study) -> None:
    """Mark the running trials of dead workers failed (and queue them again)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextmanager
def heartbeats(storage: RDBStorage, trial_ids: Iterable[int], interval: int | None) -> Iterator[None]:
    """Beat for `trial_ids` every `interval` seconds while the block runs (their jobs may run in this
    process or elsewhere: the beat says the worker that waits for them is alive)."""
    ids = list(trial_ids)
    if not interval or not ids:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in ids:
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing) for the block.

    Workers on this machine (or sharing the sweep directory over a file system with working locks) take
    it around "count the study's trials, then ask for more", so that together they start exactly
    n_trials. Workers with separate directories on a shared database can overshoot by a trial at most.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
