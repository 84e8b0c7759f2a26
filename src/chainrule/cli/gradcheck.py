"""`chainrule-gradcheck`: check the configured model's gradients against finite differences.

Takes the same config and overrides as `chainrule-train` (conf/gradcheck.yaml), builds the model, the
loss and a training batch, and runs chainrule.training.gradcheck on them.
"""

import math

import hydra
from omegaconf import DictConfig

from chainrule.config.entrypoint import execute, run
from chainrule.config.groups import config_dir
from chainrule.core import console
from chainrule.training.gradcheck import GradcheckReport, GradientCheckError, print_report


def gradcheck(cfg: DictConfig) -> GradcheckReport:
    """Build model, loss and a training batch from `cfg` and check gradients; raises GradientCheckError
    (naming the layers) when any tensor's relative error exceeds `cfg.gradcheck.threshold`."""
    import lightning as L
    from hydra.utils import instantiate

    from chainrule.config import builders

    L.seed_everything(cfg.seed)
    datamodule = builders.build_datamodule(cfg)
    datamodule.setup("fit")
    task = builders.build_task(cfg, datamodule)
    inputs, targets = next(iter(datamodule.train_dataloader()))
    check = instantiate(cfg.gradcheck)
    report = check(task.model, task.loss, inputs, None if task.target == "input" else targets)
    print_report(report)
    if not report.passed:
        worst = max(report.failures, key=lambda row: math.inf if math.isnan(row.rel_error) else row.rel_error)
        raise GradientCheckError(
            f"gradient check failed in layer(s) {', '.join(report.failed_layers)}: autograd and finite "
            f"differences disagree (worst: {worst.layer}{'.' + worst.tensor if worst.tensor else ''}, "
            f"relative error {worst.rel_error:.2e} > {report.threshold:.0e}; nan: every checked element sat "
            f"on a kink, raise gradcheck.max_elements); check the backward of those layers"
        )
    console.say(f"gradient check passed: {len(report.rows)} tensors, max relative error "
               f"{max((r.rel_error for r in report.rows), default=0.0):.2e} <= {report.threshold:.0e}")
    return report


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="gradcheck")
def main(cfg: DictConfig) -> None:
    # One process: the check needs no trainer, whatever trainer= says.
    execute(gradcheck, cfg, all_ranks=False)


def cli() -> None:
    run(main, "gradcheck")


if __name__ == "__main__":
    cli()
