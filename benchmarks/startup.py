"""Start-up: seconds from launching `chainrule-train` to the end of its first optimizer step, against
the bare `python -c "import torch, lightning, hydra"` measured in the same run (interleaved repeats).

Target: <= 1.2x the bare import on a 2-core CPU.

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


def bare_import() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, lightning, hydra"], check=True)
    return time.perf_counter() - start


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
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            bare.append(bare_import())
            ours.append(first_step(Path(tmp) / str(repeat)))
    b, o = statistics.median(bare), statistics.median(ours)
    table = print_table(
        f"Start-up (median of {args.repeats})",
        ["measure", "seconds", "ratio"],
        [["python -c 'import torch, lightning, hydra'", f"{b:.2f}", "1.00"],
         ["chainrule-train to end of first optimizer step", f"{o:.2f}", f"{o / b:.2f}"]],
    )
    if not args.no_record and args.repeats > 1:
        append_results(table)


if __name__ == "__main__":
    main()
