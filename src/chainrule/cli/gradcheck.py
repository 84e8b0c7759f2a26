"""`chainrule-gradcheck`: check the configured model's gradients against finite differences.

Takes the same config and overrides as `chainrule-train` (conf/gradcheck.yaml), builds the model, the
loss and a training batch, and runs chainrule.training.gradcheck on them.
"""

import hydra
from omegaconf import DictConfig

from chainrule.config.entrypoint import execute, run
from chainrule.config.groups import config_dir
from chainrule.core import console
from chainrule.training.gradcheck import GradcheckReport, GradientCheckError, print_report


def gradcheck(cfg: DictConfig) -> GradcheckReport:
    """Build model, loss and a training batch from `cfg` and check each module's backward; raises
    GradientCheckError (naming the modules) when any relative error exceeds `cfg.gradcheck.threshold`."""
    import lightning as L
    from hydra.utils import instantiate

    from chainrule.config import builders

    L.seed_everything(cfg.seed, verbose=False)
    datamodule = builders.build_datamodule(cfg)
    datamodule.setup("fit")
    task = builders.build_task(cfg, datamodule)
    inputs, targets = next(iter(datamodule.train_dataloader()))
    check = instantiate(cfg.gradcheck)
    report = check(task.model, task.loss, inputs, None if task.target == "input" else targets)
    print_report(report)
    if not report.passed:
        raise GradientCheckError(report.summary)
    console.say(report.summary)
    return report


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="gradcheck")
def main(cfg: DictConfig) -> None:
    # One process: the check needs no trainer, whatever trainer= says.
    execute(gradcheck, cfg, all_ranks=False)


def cli() -> None:
    run(main, "gradcheck")


if __name__ == "__main__":
    cli()
