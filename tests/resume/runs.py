"""Shared pieces of the resume tests: starting, pausing and signalling the run they train
(tests.support.presets.DETERMINISTIC_RUN).

Every test here runs the real `chainrule-train` in a subprocess and delivers real signals to it. A
test-only callback (tests.resume.pause_point.PauseAt, importable through PYTHONPATH) holds the process
at an exact hook of an exact step, so that a kill lands where the test says.
"""

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.presets import DETERMINISTIC_RUN
from tests.support.processes import run_cli
from tests.support.processes import start as start_process


def start(run_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `chainrule-train DETERMINISTIC_RUN... overrides... hydra.run.dir=run_dir`; output goes to
    run_dir.log."""
    with open(f"{run_dir}.log", "a") as log:
        return start_process(
            "chainrule-train",
            *DETERMINISTIC_RUN,
            *overrides,
            f"hydra.run.dir={run_dir}",
            cwd=run_dir.parent,
            env=env,
            output=log,
        )


def resume(run_dir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`chainrule-train resume=run_dir` to the end (nothing else: the run's own config is reused)."""
    return run_cli("chainrule-train", f"resume={run_dir}", *overrides, cwd=run_dir.parent, timeout=timeout)


def pause_at(step: int, hook: str, marker: Path, seconds: float = 600) -> list[str]:
    """Overrides that add tests.resume.pause_point.PauseAt: hold at `hook` of step `step`, create `marker`."""
    return [
        "+callbacks.pause._target_=tests.resume.pause_point.PauseAt",
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


def training_state(path: Path) -> dict[str, Any]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {
        key: checkpoint[key] for key in ("global_step", "state_dict", "optimizer_states", "lr_schedulers")
    }


def assert_equal_exactly(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality with torch.equal for tensors: zero tolerance."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"keys differ at {where}"
        for key in a:
            assert_equal_exactly(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"lengths differ at {where}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_exactly(x, y, f"{where}/{i}")
    else:
        assert a == b, f"differs at {where}: {a!r} != {b!r}"


def assert_same_result(run_dir: Path, reference: Path) -> None:
    """The run's final parameters, optimizer state and LR schedule equal the uninterrupted run's, bit
    for bit."""
    final = training_state(run_dir / "checkpoints" / "last.ckpt")
    expected = training_state(reference)
    assert final["global_step"] == expected["global_step"]
    assert_equal_exactly(final["state_dict"], expected["state_dict"], "state_dict")
    assert_equal_exactly(final["optimizer_states"], expected["optimizer_states"], "optimizer_states")
    assert_equal_exactly(final["lr_schedulers"], expected["lr_schedulers"], "lr_schedulers")
