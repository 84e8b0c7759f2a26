"""Which checkpoint a (re)started SLURM job continues from.

The batch script runs `python -m chainrule.slurm.resume RUN_DIR` once per start, before any rank, and
passes what it prints as `ckpt_path`; nothing printed means a fresh start. Standard library only, so it
answers in milliseconds.
"""

import sys
from pathlib import Path


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint in `run_dir`, or None on a first start.

    Candidates: Lightning's `hpc_ckpt_<n>.ckpt` in the run directory (saved on USR1 just before Lightning
    requeues the job) and the checkpoints in `checkpoints/` (`last.ckpt` and the best ones: all that a
    plain `scontrol requeue` or a node failure leaves). The one written last holds the most progress;
    with a monitored metric, Lightning 2.6 rewrites `last.ckpt` only when it also saves a new best one.
    """
    run_dir = Path(run_dir)
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), *(run_dir / "checkpoints").glob("*.ckpt")]
    return max((path for path in candidates if path.is_file()), key=lambda path: path.stat().st_mtime_ns,
               default=None)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m chainrule.slurm.resume RUN_DIR")
    checkpoint = resume_checkpoint(sys.argv[1])
    if checkpoint is not None:
        print(checkpoint)
