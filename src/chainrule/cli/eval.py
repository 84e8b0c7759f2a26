"""`chainrule-eval ckpt_path=...`: test a checkpoint on the test split of the run that wrote it."""

import hydra
from omegaconf import DictConfig, OmegaConf

from chainrule.config.entrypoint import execute, run
from chainrule.config.groups import config_dir


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild data and task from the config stored in the checkpoint `cfg.ckpt_path` names (a file, a
    run directory, or `latest`: see chainrule.checkpointing.discovery.checkpoint_to_use), load its
    weights, and test.

    The trainer and loggers come from the eval config, so a GPU-trained checkpoint can be tested on CPU.
    """
    from chainrule.checkpointing.discovery import checkpoint_to_use
    from chainrule.checkpointing.io import load_run_config
    from chainrule.cli.reporting import logger_hints, print_results
    from chainrule.config import builders

    checkpoint = checkpoint_to_use(cfg.ckpt_path, cfg.paths.log_dir)
    run_cfg = OmegaConf.create(load_run_config(checkpoint))
    datamodule = builders.build_datamodule(run_cfg)
    task = builders.build_task(run_cfg, datamodule)
    trainer = builders.build_trainer(cfg, callbacks=[], loggers=builders.build_loggers(cfg))
    trainer.test(task, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print_results("test", metrics, {"checkpoint": checkpoint, "run directory": cfg.paths.output_dir},
                  logger_hints(trainer))
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    execute(evaluate, cfg, required=["trainer"])


def cli() -> None:
    run(main, "eval", required=("ckpt_path",))


if __name__ == "__main__":
    cli()
