"""`chainrule-train`: compose the config, build data, task and trainer, then fit and test."""

import time

import hydra
from omegaconf import DictConfig, OmegaConf

from chainrule.config.entrypoint import execute, run
from chainrule.config.groups import config_dir
from chainrule.core.secrets import redact


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit on the train split (validating each epoch), then test the best checkpoint.

    Returns the final train/val/test metrics by name. A run directory that holds checkpoints is resumed
    from its newest intact one; one whose training finished trains on only when asked for more.
    With `tune=<finder>` set, runs that finder instead of training and returns its suggestion.
    """
    # Imported here so that `--help`, `--cfg` and command-line errors answer without loading torch.
    import lightning as L
    import torch

    from chainrule.checkpointing.discovery import finished
    from chainrule.cli.reporting import print_config_tree, print_header, print_summary
    from chainrule.config import builders
    from chainrule.config.validation import check_one_step, check_targets
    from chainrule.training import fitting
    from chainrule.training.init_from import initialize_from

    started = time.monotonic()
    shown = OmegaConf.create(redact(OmegaConf.to_container(cfg, resolve=True)))  # what is printed and logged
    if cfg.print_config:
        print_config_tree(shown)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = builders.build_datamodule(cfg)
    check_targets(cfg, datamodule)
    task = builders.build_task(cfg, datamodule)
    initialize_from(cfg, task.model)
    check_one_step(cfg, datamodule, task)
    trainer = builders.build_trainer(cfg, builders.build_callbacks(cfg), builders.build_loggers(cfg))
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(shown))
    print_header(cfg, datamodule, task, trainer)

    tuner = builders.build_tuner(cfg)
    if tuner is not None:
        return tuner(trainer=trainer, task=task, datamodule=datamodule, output_dir=cfg.paths.output_dir)

    if cfg.train:
        fitting.fit(trainer, task, datamodule, cfg)
    metrics = dict(trainer.callback_metrics)

    best = fitting.best_checkpoint(trainer, cfg.paths.output_dir)
    if cfg.test:
        trainer.test(task, datamodule=datamodule, ckpt_path=best or cfg.ckpt_path, verbose=False)
        metrics.update(trainer.callback_metrics)

    metrics = {name: float(value) for name, value in metrics.items()}
    print_summary(cfg, trainer, metrics, started, (finished(cfg.paths.output_dir) or {}).get("stopped"), best)
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = execute(train, cfg)
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None


def cli() -> None:
    run(main, "train")


if __name__ == "__main__":
    cli()
