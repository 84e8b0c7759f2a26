"""The few SLURM commands chainrule-submit runs: sinfo, sbatch, scontrol and scancel."""

import re
import shutil
import subprocess
from dataclasses import dataclass

from chainrule.core.errors import ConfigError


def slurm(*args: str, stdin: str | None = None) -> str:
    """Run a SLURM command and return its stdout; a refusal becomes a ConfigError with SLURM's message."""
    if shutil.which(args[0]) is None:
        raise ConfigError(f"SLURM's `{args[0]}` is not on PATH: run chainrule-submit on a machine that can "
                          f"submit jobs (a login node), or use --dry-run to only print the script")
    result = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        message = "; ".join(line.strip() for line in lines) or f"exit status {result.returncode}"
        raise ConfigError(f"`{' '.join(args)}` failed: {message}")
    return result.stdout


@dataclass(frozen=True)
class Partition:
    """What one partition can give a job: its largest node and how many nodes it has."""

    name: str
    default: bool
    nodes: int
    cpus_per_node: int
    gpus_per_node: int


def partitions() -> dict[str, Partition]:
    """The cluster's partitions by name, from `sinfo` (one line per node and partition)."""
    rows: dict[str, list[tuple[str, int, int]]] = {}
    defaults = set()
    for line in slurm("sinfo", "--noheader", "--Node", "--format=%N|%P|%c|%G").splitlines():
        node, name, cpus, gres = line.strip().split("|")
        if name.endswith("*"):  # sinfo marks the default partition
            name = name[:-1]
            defaults.add(name)
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        rows.setdefault(name, []).append((node, int(cpus.rstrip("+")), gpus))
    return {
        name: Partition(name, name in defaults, len({node for node, _, _ in nodes}),
                        max(cpus for _, cpus, _ in nodes), max(gpus for _, _, gpus in nodes))
        for name, nodes in rows.items()
    }


def submit_held(script: str) -> str:
    """Submit `script` on hold and return its job id (the job cannot start before `release`)."""
    return slurm("sbatch", "--hold", "--parsable", stdin=script).strip().split(";")[0]


def release(job_id: str) -> None:
    slurm("scontrol", "release", job_id)


def cancel(job_id: str) -> None:
    slurm("scancel", job_id)
