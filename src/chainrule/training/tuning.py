"""`chainrule-train tune=...`: Lightning's learning-rate and batch-size finders, run instead of training.

Each finder prints its suggestion as the override to put on the next `chainrule-train` command line.
"""

from pathlib import Path

import lightning as L
from lightning.pytorch.tuner import Tuner

from chainrule.core import console

LR_KEY = "optim.lr"  # every conf/optim option names its learning rate `lr`
BATCH_KEY = "data.batch_size"  # the global batch (see chainrule.data.batching)
LR_PLOT = "lr_find.png"


def find_lr(
    trainer: L.Trainer,
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    output_dir: str,
    min_lr: float,
    max_lr: float,
    num_training: int,
    mode: str,
    early_stop_threshold: float | None,
) -> dict[str, float]:
    """Train `num_training` steps with the learning rate rising from `min_lr` to `max_lr` (`mode`:
    exponential or linear), then suggest the rate where the loss fell fastest.

    The model is restored afterwards. Writes the loss-vs-rate plot to `<output_dir>/lr_find.png`.
    Returns {"lr": suggestion} (empty when the loss curve had too few finite points to suggest one).
    """
    finder = Tuner(trainer).lr_find(
        task, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training, mode=mode,
        early_stop_threshold=early_stop_threshold, update_attr=False,
    )
    if finder is None:  # Lightning skips the search under fast_dev_run
        console.warn("lr_find: skipped (trainer.fast_dev_run is set)")
        return {}
    suggestion = finder.suggestion()
    plot = _save_plot(finder, Path(output_dir) / LR_PLOT)
    console.say(f"lr_find: searched {min_lr:g} .. {max_lr:g} over {len(finder.results['lr'])} steps")
    console.say(f"plot: {plot}")
    if suggestion is None:
        console.warn("lr_find: no suggestion: too few finite losses; increase tune.num_training or lower "
                     "tune.max_lr")
    else:
        console.say(f"suggested learning rate: {suggestion:.3g}\nuse it with: {LR_KEY}={suggestion:.3g}")
    return {} if suggestion is None else {"lr": float(suggestion)}


def _save_plot(finder, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on cluster nodes
    import matplotlib.pyplot as plt

    figure = finder.plot(suggest=True)
    figure.axes[0].set_title("loss vs learning rate (red: suggestion)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def find_batch_size(
    trainer: L.Trainer,
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    output_dir: str,
    mode: str,
    steps_per_trial: int,
    init_val: int,
    max_trials: int,
    max_val: int,
) -> dict[str, float]:
    """Grow the global batch size from `init_val` (`mode`: power doubles until out of memory; binsearch
    then refines) with `steps_per_trial` steps each, at most `max_trials` trials and `max_val` samples.

    On a CPU nothing runs out of memory: the search ends at max_trials, max_val or the dataset size.
    `output_dir` is unused (every tuner is called the same way).
    Returns {"batch_size": largest size that ran}.
    """
    size = Tuner(trainer).scale_batch_size(
        task, datamodule=datamodule, mode=mode, steps_per_trial=steps_per_trial, init_val=init_val,
        max_trials=max_trials, batch_arg_name="batch_size", max_val=max_val,
    )
    if size is None:
        console.warn("batch_size: skipped (trainer.fast_dev_run is set)")
        return {}
    samples = datamodule.split_sizes()["train"]
    if size >= samples:
        console.say(f"the whole training set ({samples} samples) fits in one batch")
    console.say(f"largest batch size that fit: {size}\nuse it with: {BATCH_KEY}={size}")
    return {"batch_size": float(size)}
