"""How tests share the machine when pytest-xdist runs two at a time (`make test` does: `-n 2`).

Most tests train one small model in one process, and two of them fit the two cores. A test that starts
several training processes at once (DDP ranks, multi-node SLURM jobs: marked `multiprocess`) needs the
whole machine, or its ranks and watchers time out behind the other worker's test. So each test takes a
share of the machine, and those tests take all of it.

Fair reader-writer locking on two files: every test passes through the turnstile, so a test waiting for
the whole machine holds back new shared tests instead of waiting behind a stream of them.
"""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

WHOLE_MACHINE_MARKERS = ("multiprocess",)


def needs_whole_machine(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) for name in WHOLE_MACHINE_MARKERS)


def whole_machine_tests_last(items: list[pytest.Item]) -> None:
    """Run the tests that need the whole machine after the others (stable: collection order within each
    part; a file that holds both kinds runs on one worker where its first test falls). Among the others,
    each of them would first wait for the other worker's current test (a docs test runs for minutes)
    while its own worker idled."""
    items.sort(key=needs_whole_machine)


SHARED_DIR_VARIABLE = "CHAINRULE_TESTS_SHARED_DIR"


def open_shared_dir(config: pytest.Config) -> None:
    """In the pytest-xdist controller, before its workers start: a folder they all share (they inherit
    the environment)."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ[SHARED_DIR_VARIABLE] = tempfile.mkdtemp(prefix="chainrule-tests-")


def shared_dir() -> Path | None:
    """The folder the workers of this pytest run share, or None when tests run one at a time."""
    folder = os.environ.get(SHARED_DIR_VARIABLE)
    return Path(folder) if folder else None


def run_at_the_end(args: list[str], env: dict[str, str]) -> bool:
    """Under pytest-xdist, leave a command (stopping what a session fixture started) for the controller
    to run once every worker is done, since another worker may still use what it stops. False when tests
    run one at a time: the caller runs it itself."""
    folder = shared_dir()
    if folder is None:
        return False
    (folder / f"at-end-{uuid.uuid4().hex}.json").write_text(json.dumps({"args": args, "env": env}))
    return True


def close_shared_dir() -> None:
    """In the pytest-xdist controller, once its workers are done: run what they left, remove the folder."""
    folder = shared_dir()
    if folder is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for left in sorted(folder.glob("at-end-*.json")):
        command = json.loads(left.read_text())
        subprocess.run(command["args"], env=command["env"], capture_output=True, timeout=300)
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def share_of_the_machine(whole: bool) -> Iterator[None]:
    """Hold the machine (alone when `whole`) for the block; a no-op outside pytest-xdist."""
    folder = shared_dir()
    if folder is None:
        yield
        return
    with open(folder / "turnstile", "a") as turnstile, open(folder / "machine", "a") as machine:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(machine, fcntl.LOCK_EX if whole else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(machine, fcntl.LOCK_UN)
