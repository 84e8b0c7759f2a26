"""Which checkpoint a run continues from: the newest intact one anywhere in its run directory.

The one rule for every way a run restarts (`resume=<run dir>`, a requeued SLURM job, a run directory
reused by a launcher). Checkpoints are found by their `.ckpt` suffix wherever they lie in the run
directory, so the folder names (conf/paths/, Lightning's `hpc_ckpt_<n>.ckpt` at the top) live in the
config alone.
"""

from pathlib import Path

from chainrule.checkpointing.io import TEMP_SUFFIX, is_intact
from chainrule.core import console


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """The checkpoints a run directory holds, newest first (by modification time: each file appears,
    complete, at the moment it was renamed into place; ties broken by name)."""
    paths = [p for p in Path(run_dir).rglob("*.ckpt") if p.is_file() and not p.name.startswith(".")]
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
        temp.unlink(missing_ok=True)

