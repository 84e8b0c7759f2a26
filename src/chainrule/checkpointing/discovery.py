"""Which checkpoint a run continues from: the newest intact one anywhere in its run directory.

The one rule for every way a run restarts (`resume=<run dir>`, a requeued SLURM job, a run directory
reused by a launcher). Checkpoints are found by their `.ckpt` suffix wherever they lie in the run
directory, so the folder names (conf/paths/, Lightning's `hpc_ckpt_<n>.ckpt` at the top) live in the
config alone. A sharded checkpoint (trainer=fsdp) is a folder with that suffix
(chainrule.checkpointing.sharded), found and checked the same way.
"""

import json
import os
from pathlib import Path
from typing import Any

from chainrule.checkpointing.io import TEMP_SUFFIX, is_intact
from chainrule.checkpointing.sharded import is_sharded, remove
from chainrule.core import console
from chainrule.core.errors import CheckpointError


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """The checkpoints a run directory holds, files and sharded folders, newest first (by modification
    time: each appears, complete, at the moment it was renamed into place; ties broken by name)."""
    paths = [p for p in Path(run_dir).rglob("*.ckpt")
             if (p.is_file() or p.is_dir()) and not p.name.startswith(".")]
    return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def newest_intact_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint in `run_dir` that is intact; each newer damaged one is reported and skipped."""
    for path in checkpoint_candidates(run_dir):
        if is_intact(path):
            return path
        console.warn(f"skipping damaged checkpoint {path} (truncated or corrupt); trying the previous one")
    return None


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete temporary files left by writers that were killed mid-write (call before training starts)."""
    for temp in Path(run_dir).glob(f"**/.*.ckpt.*{TEMP_SUFFIX}"):
        remove(temp)  # a file, or a sharded checkpoint's folder



FINISHED = "finished.json"  # in a run directory: the record of a run whose training completed
LATEST = "latest"


def finished(run_dir: str | Path) -> dict[str, Any] | None:
    """What a run that finished training recorded (its best checkpoint, relative to the run directory),
    or None if it did not finish."""
    path = Path(run_dir) / FINISHED
    return json.loads(path.read_text()) if path.is_file() else None


def mark_finished(run_dir: str | Path, best_checkpoint: str | None, global_step: int, reason: str,
                  limits: dict[str, Any]) -> None:
    """Record that training completed, and under which limits (how long it was asked to train). Paths are
    relative to the run directory: a moved or copied run directory points at its own files."""
    run_dir = Path(run_dir)
    best = os.path.relpath(best_checkpoint, run_dir) if best_checkpoint else None
    path = run_dir / FINISHED
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps({"best_checkpoint": best, "global_step": global_step, "stopped": reason,
                                      "limits": limits}) + "\n")
    temporary.replace(path)


def checkpoint_to_use(value: str | Path, log_dir: str | Path, key: str = "ckpt_path") -> Path:
    """The checkpoint that `ckpt_path=<value>` (or another `key`, e.g. init_from) means, checked intact: a
    checkpoint file itself; for a run directory, the best checkpoint its finished training recorded, else
    its newest intact one; for `latest`, that of the newest run under `log_dir` that holds a checkpoint."""
    path = latest_run_with_checkpoints(log_dir, key) if str(value) == LATEST else Path(value).expanduser()
    key = f"{key}={value}"
    if path.is_dir() and not is_sharded(path):
        record = finished(path)
        best = path / record["best_checkpoint"] if record and record.get("best_checkpoint") else None
        path = best if best is not None and is_intact(best) else newest_intact_checkpoint(path)
        if path is None:
            raise CheckpointError(f"{key}: the run directory holds no intact checkpoint; pass a checkpoint "
                                  f"file, or a run that saved one")
        return path
    if not path.exists():
        raise CheckpointError(f"{key}: checkpoint not found; pass a .ckpt file, a run directory, or latest")
    if not is_intact(path):
        raise CheckpointError(f"{key}: the checkpoint is damaged (truncated or corrupt); pick another one "
                              f"from its run's checkpoints/ folder, or pass the run directory")
    return path


def latest_run_with_checkpoints(log_dir: str | Path, key: str = "ckpt_path") -> Path:
    """The newest run directory under `log_dir` (any experiment, runs and multirun jobs) with a checkpoint."""
    runs = {p.parent.parent for p in Path(log_dir).glob("*/runs/*/checkpoints/*.ckpt")}
    runs |= {p.parent.parent for p in Path(log_dir).glob("*/multiruns/*/*/checkpoints/*.ckpt")}
    if not runs:
        raise CheckpointError(f"{key}=latest: no run under {log_dir} has saved a checkpoint yet; train "
                              f"one first, or pass a checkpoint file or run directory")
    return max(runs, key=lambda run: max(p.stat().st_mtime_ns for p in run.rglob("*.ckpt")))
