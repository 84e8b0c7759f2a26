"""`chainrule-export ckpt_path=... format=onnx|torch_export`: a checkpoint's model as an ONNX or
torch.export file, checked against the eager model on a batch of the checkpoint's own data."""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from chainrule.config.entrypoint import execute, run
from chainrule.config.groups import config_dir


def export(cfg: DictConfig) -> float:
    """Rebuild the model from the config stored in the checkpoint `cfg.ckpt_path` names (a file, a run
    directory, or `latest`), export it to `cfg.output` (default: model.onnx or model.pt2 in this command's
    run directory), and compare the exported model with the eager one on up to `cfg.batch_size` samples of
    the checkpoint's test split. Returns the largest absolute difference; above `cfg.tolerance` it raises
    ChainruleError (exit status 2), the file kept for inspection."""
    from chainrule.checkpointing.discovery import checkpoint_to_use
    from chainrule.checkpointing.io import load_checkpoint, load_run_config
    from chainrule.config import builders
    from chainrule.core import console
    from chainrule.core.errors import ChainruleError
    from chainrule.training.export import SUFFIXES, check_format, max_difference
    from chainrule.training.export import export as export_model

    check_format(cfg.format)
    checkpoint = checkpoint_to_use(cfg.ckpt_path, cfg.paths.log_dir)
    run_cfg = OmegaConf.create(load_run_config(checkpoint))
    run_cfg.task.compile = None  # the exporters trace the plain module
    datamodule = builders.build_datamodule(run_cfg)
    task = builders.build_task(run_cfg, datamodule)
    task.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    model = task.model.eval()
    splits = datamodule.splits
    samples = next(split for split in (splits.test, splits.val, splits.train) if len(split))
    batch = samples.x[:cfg.batch_size]

    default = Path(cfg.paths.output_dir) / f"model{SUFFIXES[cfg.format]}"
    path = Path(cfg.output) if cfg.get("output") else default
    export_model(model, batch, cfg.format, path)
    difference = max_difference(model, path, cfg.format, batch)
    console.say(f"exported {checkpoint} as {cfg.format}: {path}")
    console.say(f"max abs difference from the eager model on {len(batch)} samples: {difference:.3g} "
                f"(tolerance {cfg.tolerance:g})")
    if not difference <= cfg.tolerance:  # also refuses NaN
        raise ChainruleError(f"parity check failed: the exported model differs from the eager model by up to "
                             f"{difference:.3g} > tolerance={cfg.tolerance:g} (file kept: {path}); check the "
                             f"model for operations the exporter changes, or raise tolerance=")
    return difference


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    # One process on the CPU: exporting needs no trainer.
    execute(export, cfg, required=[], all_ranks=False)


def cli() -> None:
    run(main, "export", required=("ckpt_path",))


if __name__ == "__main__":
    cli()
