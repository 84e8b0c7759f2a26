"""The few SLURM commands chainrule-submit runs: sinfo, sbatch, scontrol and scancel."""

import shutil
import subprocess

from chainrule.errors import ConfigError


def slurm(*args: str, stdin: str | None = None) -> str:
    """Run a SLURM command and return its stdout; a refusal becomes a ConfigError with SLURM's message."""
    if shutil.which(args[0]) is None:
        raise ConfigError(f"SLURM's `{args[0]}` is not on PATH: run chainrule-submit on a machine that can submit "
                          f"jobs (a login node), or use --dry-run to only print the script")
    result = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise ConfigError(f"`{' '.join(args)}` failed: {message}")
    return result.stdout


def partitions() -> list[str]:
    """The partitions this cluster has."""
    return sorted(set(slurm("sinfo", "--noheader", "--format=%R").split()))


def submit_held(script: str) -> str:
    """Submit `script` on hold and return its job id (the job cannot start before `release`)."""
    return slurm("sbatch", "--hold", "--parsable", stdin=script).strip().split(";")[0]


def release(job_id: str) -> None:
    slurm("scontrol", "release", job_id)


def cancel(job_id: str) -> None:
    slurm("scancel", job_id)
