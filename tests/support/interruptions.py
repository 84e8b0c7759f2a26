"""Interrupting a real training run (tests.support.presets.DETERMINISTIC_RUN) where a test says: start
`chainrule-train` in a subprocess, hold it at an exact hook of an exact step with a test-only callback
(tests.support.pause_point.PauseAt, importable through PYTHONPATH), and wait for that point, so that a
kill or a signal lands there.
"""

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.support.presets import DETERMINISTIC_RUN
from tests.support.processes import start as start_process


def start(run_dir: Path, *overrides: str, env: dict[str, str] | None = None,
          preset: Sequence[str] = DETERMINISTIC_RUN) -> subprocess.Popen:
    """Start `chainrule-train preset... overrides... hydra.run.dir=run_dir`; output goes to run_dir.log."""
    with open(f"{run_dir}.log", "a") as log:
        return start_process(
            "chainrule-train",
            *preset,
            *overrides,
            f"hydra.run.dir={run_dir}",
            cwd=run_dir.parent,
            env=env,
            output=log,
        )


def start_resume(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """Start `chainrule-train resume=run_dir overrides...` (the run's own config); output goes to
    run_dir.log."""
    with open(f"{run_dir}.log", "a") as log:
        return start_process("chainrule-train", f"resume={run_dir}", *overrides, cwd=run_dir.parent,
                             output=log)


def pause_at(step: int, hook: str, marker: Path, seconds: float = 600) -> list[str]:
    """Overrides that add tests.support.pause_point.PauseAt: hold at `hook` of step `step` and create
    `marker`."""
    return [
        "+callbacks.pause._target_=tests.support.pause_point.PauseAt",
        f"+callbacks.pause.step={step}",
        f"+callbacks.pause.hook={hook}",
        f"+callbacks.pause.marker={marker}",
        f"+callbacks.pause.seconds={seconds}",
    ]


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen, run_dir: Path, timeout: float = 240
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(
                f"training exited ({process.returncode}) before the test's point:\n{output(run_dir)[-3000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for the test's point:\n{output(run_dir)[-3000:]}")
        time.sleep(0.05)


def output(run_dir: Path) -> str:
    path = Path(f"{run_dir}.log")
    return path.read_text() if path.exists() else ""
