"""The sbatch script of a training job, rendered from `slurm/templates/train.sbatch`."""

import shlex
import string
import sys
from pathlib import Path

from omegaconf import DictConfig

from chainrule.launch.run_id import slurm_run_id
from chainrule.slurm.container import Container
from chainrule.slurm.job import JobSpec

TEMPLATE = "train.sbatch"
LOG_NAME = "slurm.out"


class SbatchTemplate(string.Template):
    """`@@{name}` placeholders, because `$` belongs to bash."""

    delimiter = "@@"


def template_path(name: str = TEMPLATE) -> Path:
    """`templates/` inside an installed wheel, else the repository's `slurm/templates/`."""
    packaged = Path(__file__).parent / "templates" / name
    source = Path(__file__).resolve().parents[3] / "slurm" / "templates" / name
    return packaged if packaged.is_file() else source


def sbatch_options(cfg: DictConfig, spec: JobSpec, workdir: Path, runs_dir: Path) -> list[str]:
    cluster = cfg.cluster
    job_id = "%A_%a" if cluster.get("array") else "%j"  # SLURM's filename patterns for the same ids
    options = [f"--job-name={cfg.name}", f"--nodes={spec.nodes}", f"--ntasks-per-node={spec.tasks_per_node}"]
    if spec.gpus_per_node:
        options.append(f"--gpus-per-node={spec.gpus_per_node}")
    options.append(f"--cpus-per-task={spec.cpus_per_task}")
    if cluster.mem is not None:
        options.append(f"--mem={cluster.mem}")
    options.append(f"--time={cluster.time}")
    options += [f"--{key}={cluster[key]}" for key in ("partition", "account", "qos", "constraint", "array")
                if cluster.get(key) is not None]
    if cluster.signal_grace is not None:
        options.append(f"--signal=USR1@{cluster.signal_grace}")
    options += [
        "--requeue" if cluster.requeue else "--no-requeue",
        "--open-mode=append",  # a requeued job appends to its log instead of truncating it
        f"--chdir={workdir}",
        f"--output={runs_dir / slurm_run_id(job_id) / LOG_NAME}",
        *[str(option) for option in cluster.get("sbatch") or []],
    ]
    return [f"#SBATCH {option}" for option in options]


def render(cfg: DictConfig, spec: JobSpec, train_overrides: list[str], workdir: Path, runs_dir: Path,
           container: Container | None) -> str:
    """The batch script: one `srun` step running chainrule-train with `train_overrides` on every rank.
    The ranks name the run directory `<paths.runs_dir>/slurm-<job id>` themselves
    (chainrule.launch.run_id), and resume from its newest intact checkpoint if it has one."""
    prefix, train = (container.exec_prefix(), ["chainrule-train"]) if container else \
        ([], [sys.executable, "-m", "chainrule.cli.train"])
    srun = ["srun", "--kill-on-bad-exit=1", f"--cpus-per-task={spec.cpus_per_task}",
            *(container.srun_options() if container else [])]
    launch = [
        *(join(words) for words in (srun, prefix, train) if words),
        *(shlex.quote(override) for override in train_overrides),
    ]
    return SbatchTemplate(template_path().read_text()).substitute(
        sbatch_options="\n".join(sbatch_options(cfg, spec, workdir, runs_dir)),
        cpus_per_task=spec.cpus_per_task,
        setup="\n".join(str(line) for line in cfg.cluster.get("setup") or []),
        launch=" \\\n    ".join(launch),
    )


def join(words: list[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)
