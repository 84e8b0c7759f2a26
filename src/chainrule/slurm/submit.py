"""`chainrule-submit [--dry-run] <overrides>`: run chainrule-train as a SLURM job.

The overrides are chainrule-train's, plus `cluster=<option>` and `cluster.<key>=<value>` for where and
how the job runs (conf/cluster/). The config is composed and checked here, on the submitting machine,
before anything reaches the queue; every rank of the job then composes the same config again.
"""

import argparse
import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from chainrule.config.groups import check_group_choices, config_dir
from chainrule.config.validation import validate
from chainrule.core import console
from chainrule.core.errors import ChainruleError, ConfigError
from chainrule.launch.run_id import slurm_run_id
from chainrule.slurm import cluster
from chainrule.slurm.container import container_from_config
from chainrule.slurm.job import JobSpec, array_indices, check_fits, job_spec
from chainrule.slurm.script import LOG_NAME, render

CONFIG_NAME = "submit"  # conf/submit.yaml: conf/train.yaml plus the cluster group
SCRIPT_NAME = "job.sbatch"


def compose_config(overrides: list[str]) -> DictConfig:
    """The submission config, composed as chainrule-train composes its own (same tree, same overrides)."""
    check_group_choices(overrides)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # so that ${hydra:runtime.cwd} in paths resolves as in a run
    return cfg


def train_overrides(overrides: list[str]) -> list[str]:
    """The overrides each rank passes to chainrule-train: all but the cluster's, which only submission
    reads."""
    kept = []
    for text, override in zip(overrides, OverridesParser.create().parse_overrides(overrides), strict=True):
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(f"{text} is a sweep; chainrule-submit submits one run. Sweep with "
                              f"`chainrule-train -m hydra/launcher=slurm {text} ...` instead (docs/slurm.md)")
        if key == "hydra.run.dir":
            raise ConfigError("a SLURM job's run directory is <paths.runs_dir>/slurm-<job id>, so that a "
                              "requeued job finds its checkpoints; choose the place with paths.runs_dir")
        if key != "cluster" and not key.startswith("cluster."):
            kept.append(text)
    return kept


def prepare(overrides: list[str]) -> tuple[DictConfig, JobSpec, str, Path]:
    """Compose and check the config and render the job script.

    Returns (config, resources, script, runs dir)."""
    try:
        kept = train_overrides(overrides)
        cfg = compose_config(overrides)
        validate(cfg, machine=False)  # the trainer runs on the compute nodes, not here
        spec = job_spec(cfg)
        workdir = Path.cwd()
        runs_dir = Path(os.path.abspath(cfg.paths.runs_dir))
        container = container_from_config(cfg.cluster.get("container"), workdir, runs_dir,
                                          gpus=spec.gpus_per_node > 0)
        return cfg, spec, render(cfg, spec, kept, workdir, runs_dir, container), runs_dir
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(" ".join(line.strip() for line in str(error).strip().splitlines())) from error


def submit(cfg: DictConfig, spec: JobSpec, script: str, runs_dir: Path) -> tuple[str, list[Path]]:
    """Check that the cluster can run the job, queue it and create its run directories (SLURM writes the
    log there from the first second). The job is held until they exist, since their names hold the job id;
    returns (job id, run dirs)."""
    check_fits(spec, cfg.cluster.partition, cluster.partitions())
    job_id = cluster.submit_held(script)
    array = cfg.cluster.get("array")
    ids = [f"{job_id}_{task}" for task in array_indices(array)] if array else [job_id]
    run_dirs = [runs_dir / slurm_run_id(i) for i in ids]
    try:
        for run_dir in run_dirs:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / SCRIPT_NAME).write_text(script)
        cluster.release(job_id)
    except (OSError, ConfigError) as error:
        cluster.cancel(job_id)  # a held job would wait forever
        raise ConfigError(f"job {job_id} cancelled: {error}") from error
    return job_id, run_dirs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chainrule-submit",
        description="Run chainrule-train as a SLURM job: one task per device on trainer.num_nodes nodes, "
                    "checkpointed and requeued before its time limit, resumed in the same run directory.",
        epilog="examples:\n"
               "  chainrule-submit --dry-run trainer=gpu trainer.devices=4 trainer.num_nodes=2 "
               "cluster.partition=gpu\n"
               "  chainrule-submit experiment=mnist_cnn trainer=gpu cluster=mysite cluster.time=08:00:00",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dry-run", action="store_true",
                        help="print the sbatch script and exit (checks the config; does not ask the cluster)")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="chainrule-train overrides, and cluster=<option> / cluster.<key>=<value>")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, spec, script, runs_dir = prepare(args.overrides)
        if args.dry_run:
            sys.stdout.write(script)
            return 0
        job_id, run_dirs = submit(cfg, spec, script, runs_dir)
    except ChainruleError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        console.error_line(str(error))
        return 2
    with console.plain_console():
        console.say(f"submitted job {job_id}")
        for run_dir in run_dirs:
            console.say(f"run directory: {run_dir}\nlog: {run_dir / LOG_NAME}")
        console.say(f"check: squeue -j {job_id}; sacct -j {job_id}\ncancel: scancel {job_id}")
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
