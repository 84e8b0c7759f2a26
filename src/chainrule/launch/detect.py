"""Who started this process and which rank it is, read from the environment alone.

A run of N ranks starts in one of three ways, and all end in the same Lightning run:

- `chainrule-train trainer=ddp_cpu trainer.devices=2` (no launcher): this process composes the config,
  becomes rank 0 and starts ranks 1..N-1 itself (chainrule.launch.local_ranks).
- torchrun (`TORCHELASTIC_RUN_ID`), or srun (`SLURM_NTASKS`): the launcher starts every rank with the
  same command line, so each composes the same config; chainrule.launch.run_id pins the run directory.
- any other launcher that exports `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (and optionally
  `LOCAL_RANK`, `NODE_RANK`), e.g. submitit's `TorchDistributedEnvironment().export()` or a script.

Detection mirrors Lightning's own (torchelastic before SLURM before plain variables), so chainrule and
Lightning always agree on ranks.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: Set in the environment of ranks started by chainrule.launch.local_ranks: the function to run and its
#: config.
ENTRY_ENV = "CHAINRULE_RANK_ENTRY"
CONFIG_ENV = "CHAINRULE_RANK_CONFIG"

EXTERNAL_LAUNCHERS = ("torchrun", "slurm", "env")
# As Lightning: a SLURM job with one of these names is an interactive allocation, not an srun step.
INTERACTIVE_SLURM_JOBS = ("bash", "interactive")


@dataclass(frozen=True)
class Launch:
    """How this process was started.

    launcher: `none` (a plain command: chainrule starts any further ranks), `chainrule` (a rank started
    by `on_all_ranks`), `torchrun`, `slurm` or `env` (an external launcher started every rank).
    """

    launcher: str
    rank: int = 0
    world_size: int = 1

    @property
    def external(self) -> bool:
        return self.launcher in EXTERNAL_LAUNCHERS


def detect_launch(env: Mapping[str, str] = os.environ) -> Launch:
    """The launcher of this process, from its environment variables (nothing is imported or probed)."""
    if ENTRY_ENV in env:
        return Launch("chainrule", int(env["RANK"]), int(env["WORLD_SIZE"]))
    if "TORCHELASTIC_RUN_ID" in env:
        return Launch("torchrun", int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)))
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in INTERACTIVE_SLURM_JOBS:
        return Launch("slurm", int(env.get("SLURM_PROCID", 0)), int(env["SLURM_NTASKS"]))
    if "WORLD_SIZE" in env and ("RANK" in env or "LOCAL_RANK" in env):
        return Launch("env", int(env.get("RANK", env.get("LOCAL_RANK", 0))), int(env["WORLD_SIZE"]))
    return Launch("none")

