"""`chainrule-consolidate ckpt_path=...`: one checkpoint file from a sharded checkpoint (trainer=fsdp)."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from chainrule.config.entrypoint import execute, run
from chainrule.config.groups import config_dir

SUFFIX = ".consolidated.pt"


def consolidate(cfg: DictConfig) -> Path:
    """Read the sharded checkpoint `cfg.ckpt_path` names (a folder, a run directory's best, or `latest`:
    chainrule.checkpointing.discovery.checkpoint_to_use) in this one process, and write it as one
    checkpoint file (`cfg.output`, or `<checkpoint>.consolidated.pt` next to it), atomically.

    The file holds what a run that does not shard writes: whole tensors, the optimizer state by parameter
    index, loop counters, callbacks, the run's config. chainrule-eval tests it on any trainer; `ckpt_path=`
    starts a run that does not shard from it.
    """
    from chainrule.checkpointing.dcp import consolidate as read_whole
    from chainrule.checkpointing.discovery import checkpoint_to_use
    from chainrule.checkpointing.io import AtomicCheckpointIO
    from chainrule.checkpointing.sharded import is_sharded
    from chainrule.core import console
    from chainrule.core.errors import CheckpointError

    checkpoint = checkpoint_to_use(cfg.ckpt_path, cfg.paths.log_dir)
    if not is_sharded(checkpoint):
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {checkpoint} is one file already (not a sharded "
                              f"checkpoint); chainrule-eval and ckpt_path= read it as it is")
    output = Path(cfg.output) if cfg.output else checkpoint.with_name(checkpoint.stem + SUFFIX)
    state = read_whole(checkpoint)
    AtomicCheckpointIO(write_delay_s=0.0, in_background=False).save_checkpoint(state, output)
    tensors = sum(t.numel() for t in state["state_dict"].values() if hasattr(t, "numel"))
    console.say(f"consolidated {checkpoint} (step {state.get('global_step')}, {tensors:,} values in the "
                f"model's state)\ninto {output}\ntest it with: chainrule-eval ckpt_path={output}")
    return output


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="consolidate")
def main(cfg: DictConfig) -> None:
    # One process: reading every shard needs no process group.
    execute(consolidate, cfg, required=[], all_ranks=False)


def cli() -> None:
    run(main, "consolidate", required=("ckpt_path",))


if __name__ == "__main__":
    cli()
