"""Run identity: every rank of a run resolves the same config and the same run directory, and only
rank 0 writes into it.

- The run directory is `${run_dir:<runs dir>,<time format>}` (conf/hydra/default.yaml): the launcher's job id
  where there is one, so that ranks started separately (torchrun, srun) and a requeued SLURM job all
  land in one directory; the current time otherwise. Ranks that chainrule starts itself never compose
  a config: they receive rank 0's (chainrule.launch.local_ranks).
- Ranks other than 0 of an external launch run Hydra without writing `.hydra/` or a log file.
- chainrule.callbacks.config_agreement checks, once the ranks have met, that they all resolved the same config.
"""

import itertools
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from chainrule.core.errors import ConfigError
from chainrule.launch.detect import INTERACTIVE_SLURM_JOBS, Launch

#: Names the run directory of every rank, above any launcher's id (e.g. set by a job submitter).
RUN_ID_ENV = "CHAINRULE_RUN_ID"

# Hydra overrides for ranks > 0 of an external launch: Hydra still runs there, but writes no log file.
NONZERO_RANK_OVERRIDES = ("hydra/job_logging=stdout",)


def slurm_job_id(env: Mapping[str, str] = os.environ) -> str | None:
    """This SLURM job's id as chainrule names it: `<array job>_<task>` for a task of a job array, which
    SLURM's own %A_%a patterns also give; None outside a batch job (an interactive allocation is none)."""
    if "SLURM_JOB_ID" not in env or env.get("SLURM_JOB_NAME") in INTERACTIVE_SLURM_JOBS:
        return None
    if "SLURM_ARRAY_TASK_ID" in env:
        return f"{env.get('SLURM_ARRAY_JOB_ID', env['SLURM_JOB_ID'])}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def slurm_run_id(job_id: str) -> str:
    """The run id of SLURM job `job_id` (also given a SLURM filename pattern such as `%j`, for the job's
    log path): a requeued job keeps its id, so it finds its own run directory again."""
    return f"slurm-{job_id}"


def pinned_run_id(env: Mapping[str, str] = os.environ) -> str | None:
    """The run id all ranks agree on without talking to each other, or None when only time names it.

    CHAINRULE_RUN_ID; else the SLURM job's (see slurm_run_id), so all sruns of one job, and every restart
    of it, share a run directory; else torchrun's rendezvous id (`--rdzv-id`; torchrun's default `none`
    does not count).
    """
    if env.get(RUN_ID_ENV):
        return env[RUN_ID_ENV]
    job = slurm_job_id(env)
    if job is not None:
        return slurm_run_id(job)
    if env.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
    return None


def new_run_dir(parent: str, time_format: str) -> str:
    """`${run_dir:<parent>,<time format>}`: the run directory `<parent>/<run id>`.

    A pinned run id names the directory that all ranks and every restart of a job share. Otherwise the
    current time names a new directory, created here so that it is this run's alone: a second run
    started in the same second gets `<time>-2` (and so on), never a directory another run writes into.
    """
    pinned = pinned_run_id()
    if pinned is not None:
        return str(Path(parent) / pinned)
    stamp = datetime.now().strftime(time_format)
    Path(parent).mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count(1):
        candidate = Path(parent) / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()  # atomic: of two runs creating the same name, exactly one succeeds
        except FileExistsError:
            continue
        return str(candidate)
    raise AssertionError("unreachable")


def check_run_identity(argv: Sequence[str], launch: Launch) -> None:
    """Fail before composing when separately started ranks could not agree on a run directory."""
    if not launch.external or launch.world_size <= 1 or pinned_run_id():
        return
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(arg.lstrip("+").startswith(f"{key}=") for arg in argv):
        return
    hint = "start torchrun with --rdzv-id=<unique id>, " if launch.launcher == "torchrun" else ""
    raise ConfigError(
        f"{launch.launcher} started {launch.world_size} processes but nothing names their common run "
        f"directory; {hint}export {RUN_ID_ENV}=<unique id> to every process, or pass {key}=<path>"
    )


def rank_overrides(launch: Launch) -> list[str]:
    """Hydra overrides this process adds to its command line: none on rank 0."""
    return list(NONZERO_RANK_OVERRIDES) if launch.external and launch.rank != 0 else []
