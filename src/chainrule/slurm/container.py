"""Running each rank of a SLURM job inside a container image.

Two runtimes, chosen by `cluster.container.runtime`:
- `apptainer`: `srun ... apptainer exec [--nv] --bind <mounts> <image.sif> chainrule-train ...`
- `pyxis` (enroot): `srun --container-image=<image> --container-mounts=... chainrule-train ...`

The image provides `chainrule-train` and `python` on its PATH (docker/Dockerfile does). The working
directory, and the runs directory when it lies outside it, are mounted at the same paths, so configs,
data and the run directory mean the same inside and out.
"""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from chainrule.core.errors import ConfigError, unknown_choice

RUNTIMES = ("apptainer", "pyxis")


@dataclass(frozen=True)
class Container:
    runtime: str
    image: str
    workdir: Path
    mounts: tuple[str, ...]  # host paths, or host:container pairs; the working directory first
    gpus: bool

    def srun_options(self) -> list[str]:
        """Options of the srun that starts the ranks (pyxis runs the container through srun)."""
        if self.runtime != "pyxis":
            return []
        # pyxis wants SRC:DST pairs; a bare path is mounted at the same place.
        pairs = [mount if ":" in mount else f"{mount}:{mount}" for mount in self.mounts]
        return [f"--container-image={self.image}", f"--container-mounts={','.join(pairs)}",
                f"--container-workdir={self.workdir}"]

    def exec_prefix(self) -> list[str]:
        """The words before the command each rank runs (Apptainer wraps the command)."""
        if self.runtime != "apptainer":
            return []
        gpus = ["--nv"] if self.gpus else []
        return ["apptainer", "exec", *gpus, "--bind", ",".join(self.mounts), self.image]


def container_from_config(cfg: DictConfig | None, workdir: Path, runs_dir: Path,
                          gpus: bool) -> Container | None:
    """The container of `cluster.container`, or None when `runtime` is null (ranks run on the host)."""
    if cfg is None or cfg.get("runtime") is None:
        return None
    if cfg.runtime not in RUNTIMES:
        raise unknown_choice("container runtime (cluster.container.runtime)", str(cfg.runtime),
                             list(RUNTIMES))
    if not cfg.get("image"):
        example = {"apptainer": "/shared/images/chainrule.sif", "pyxis": "'ghcr.io#org/chainrule:0.1.0'"}
        raise ConfigError(f"cluster.container.runtime={cfg.runtime} needs an image: set "
                          f"cluster.container.image, e.g. cluster.container.image={example[cfg.runtime]}")
    mounts = [str(workdir)]
    if not runs_dir.is_relative_to(workdir):
        mounts.append(str(runs_dir))
    mounts += [str(m) for m in cfg.get("mounts") or [] if str(m) not in mounts]
    return Container(runtime=cfg.runtime, image=str(cfg.image), workdir=workdir, mounts=tuple(mounts),
                     gpus=gpus)
