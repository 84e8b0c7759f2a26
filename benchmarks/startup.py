"""Start-up and exit: seconds from launching `chainrule-train` to the end of its first optimizer step,
against the moment a bare `python -c "import torch, lightning, hydra"` has imported; and the whole
default run (`chainrule-train` as the README types it: digits MLP, default callbacks and loggers),
against that bare process's whole life, import and exit. Interleaved repeats in one run.

Targets on a 2-core CPU: first step <= 1.2x the import-only time; the whole default run <= 1.0x the
import-plus-exit time.

    python benchmarks/startup.py              # 5 interleaved repeats
    python benchmarks/startup.py --repeats 1  # CI
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import append_results, print_table

BIN = Path(sys.executable).parent
MARKER = Path(__file__).with_name("first_step_marker.py")


def bare_import() -> tuple[float, float]:
    """(seconds until the imports are done, seconds until the process has exited)."""
    start = time.time()
    done = subprocess.run([sys.executable, "-c", "import torch, lightning, hydra, time; print(repr(time.time()))"],
                          check=True, capture_output=True, text=True)
    return float(done.stdout) - start, time.time() - start


def default_run(workdir: Path) -> float:
    """Seconds of the whole default run in a new run directory (W&B offline, as without an account)."""
    start = time.time()
    subprocess.run([str(BIN / "chainrule-train"), f"hydra.run.dir={workdir}"], check=True, capture_output=True,
                   env={**os.environ, "WANDB_MODE": "offline"})
    return time.time() - start


def first_step(workdir: Path) -> float:
    """Seconds until the marker callback (added through a config override) sees the first step end.

    `workdir` must be new: a run directory with checkpoints would be resumed, not trained."""
    workdir.mkdir()
    stamp = workdir / "first_step"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(MARKER.parent), os.environ.get("PYTHONPATH", "")]),
           "FIRST_STEP_STAMP": str(stamp), "WANDB_MODE": "offline"}
    start = time.time()
    subprocess.run([str(BIN / "chainrule-train"), f"hydra.run.dir={workdir}/run", "trainer.max_steps=1",
                    "trainer.enable_progress_bar=false", "test=false",
                    "+callbacks.first_step_marker._target_=first_step_marker.FirstStepMarker"],
                   env=env, check=True, capture_output=True)
    return float(stamp.read_text()) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    imported, exited, first, whole = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            until_imported, until_exit = bare_import()
            imported.append(until_imported)
            exited.append(until_exit)
            first.append(first_step(Path(tmp) / str(repeat)))
            whole.append(default_run(Path(tmp) / f"default-{repeat}"))
    i, e, f, w = (statistics.median(x) for x in (imported, exited, first, whole))
    table = print_table(
        f"Start-up and exit (median of {args.repeats})",
        ["measure", "seconds", "ratio to its baseline"],
        [["python -c 'import torch, lightning, hydra': imports done", f"{i:.2f}", "1.00"],
         ["chainrule-train to the end of its first optimizer step", f"{f:.2f}", f"{f / i:.2f}"],
         ["python -c 'import torch, lightning, hydra': exited", f"{e:.2f}", "1.00"],
         ["chainrule-train, the whole default run", f"{w:.2f}", f"{w / e:.2f}"]],
    )
    if not args.no_record and args.repeats > 1:
        append_results(table)


if __name__ == "__main__":
    main()
