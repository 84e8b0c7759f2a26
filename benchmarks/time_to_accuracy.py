"""Time to accuracy of the default experiment on this machine: seconds of training (fit, validation
included; imports excluded) until validation accuracy first reaches the target, and the final test
accuracy. Target: >= 0.95 test accuracy within 60 s of training on 2 CPU cores.

    python benchmarks/time_to_accuracy.py
"""

import argparse
import time

import lightning as L

from benchmarks.common import append_results, compose_run, print_table
from chainrule.config import builders


class AccuracyClock(L.Callback):
    """Records the seconds since fit start at which val/acc first reached `target`."""

    def __init__(self, target: float):
        self.target = target
        self.start = 0.0
        self.reached: float | None = None

    def on_fit_start(self, *args) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, *args) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if self.reached is None and acc is not None and not trainer.sanity_checking and float(acc) >= self.target:
            self.reached = time.perf_counter() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("overrides", nargs="*", help="extra chainrule-train overrides")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    cfg = compose_run("trainer.enable_progress_bar=false", "logger=csv", *args.overrides)
    L.seed_everything(cfg.seed)
    datamodule = builders.build_datamodule(cfg)
    task = builders.build_task(cfg, datamodule)
    clock = AccuracyClock(args.target)
    trainer = builders.build_trainer(cfg, builders.build_callbacks(cfg) + [clock], builders.build_loggers(cfg))
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    trainer.test(task, datamodule=datamodule, ckpt_path="best")
    test_acc = float(trainer.callback_metrics["test/acc"])
    reached = f"{clock.reached:.1f}" if clock.reached is not None else "not reached"
    table = print_table(
        "Time to accuracy (default experiment: digits MLP)",
        ["target val/acc", "seconds to target", "fit seconds", "test/acc"],
        [[f"{args.target:.2f}", reached, f"{fit_seconds:.1f}", f"{test_acc:.4f}"]],
    )
    if not args.no_record:
        append_results(table)


if __name__ == "__main__":
    main()
