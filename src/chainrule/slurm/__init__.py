"""Running chainrule on SLURM: `chainrule-submit` renders an sbatch script from the training config,
checks it, and submits it; the job resumes from its own checkpoints when it is requeued.

- `job`: what a config asks of SLURM (nodes, tasks, GPUs, time) and whether it is consistent
- `container`: running each rank inside Apptainer or a pyxis/enroot container
- `script`: the sbatch script, rendered from `slurm/templates/`
- `cluster`: the few calls to SLURM's commands (sinfo, sbatch, scontrol)
- `resume`: which checkpoint a (re)started job continues from
- `submit`: the `chainrule-submit` command
"""
