"""PNG plots of a run's curves in its run directory, drawn from the CSV logger's metrics at the end of
training: a person without a W&B account (or a compute node without a browser) still sees them."""

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

log = logging.getLogger(__name__)

DPI = 100
FIGSIZE = (8.0, 4.5)
SPLITS = ("train/", "val/")  # test metrics are one point each, printed at the end of the run instead
GRAD_NORM_PREFIX = "grad_norm/"  # per-layer norms from the gradient-statistics callback
GLOBAL_GRAD_NORMS = ("grad_norm/global_pre_clip", "grad_norm/global_post_clip")

Series = dict[str, tuple[np.ndarray, np.ndarray]]  # metric name -> (steps, values)


def read_metrics(path: str | Path) -> Series:
    """Each column of a Lightning CSVLogger `metrics.csv` as (global steps, values), empty cells skipped."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = {name: ([], []) for name in reader.fieldnames or () if name not in ("step", "epoch")}
        for row in reader:
            for name, (steps, values) in columns.items():
                if row[name] not in ("", None):
                    steps.append(int(row["step"]))
                    values.append(float(row[name]))
    return {name: (np.asarray(s), np.asarray(v)) for name, (s, v) in columns.items() if s}


def metric_base(name: str) -> str:
    """`train/acc_epoch` -> `acc`: the metric a series shows, without split or aggregation."""
    base = name.split("/", 1)[1]
    for suffix in ("_step", "_epoch"):
        base = base.removesuffix(suffix)
    return base


def _line_figure(groups: dict[str, list[str]], metrics: Series, ylabel: Callable[[str], str],
                 log_y: bool = False) -> Figure:
    fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * max(1, (len(groups) + 1) // 2)), dpi=DPI)
    ncols = 1 if len(groups) == 1 else 2
    nrows = (len(groups) + ncols - 1) // ncols
    for i, (title, names) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for name in names:
            steps, values = metrics[name]
            ax.plot(steps, values, label=name, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set(title=title, xlabel="step", ylabel=ylabel(title))
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def loss_figure(metrics: Series) -> Figure | None:
    """Training loss per step and per epoch, and validation loss."""
    names = [n for n in metrics if n.startswith(SPLITS) and metric_base(n) == "loss"]
    return _line_figure({"loss": names}, metrics, lambda _: "loss") if names else None


def metrics_figure(metrics: Series) -> Figure | None:
    """One panel per task metric (accuracy, ...), its train and validation curves together."""
    groups: dict[str, list[str]] = {}
    for name in metrics:
        if name.startswith(SPLITS) and metric_base(name) != "loss":
            groups.setdefault(metric_base(name), []).append(name)
    return _line_figure(groups, metrics, lambda title: title) if groups else None


def lr_figure(metrics: Series) -> Figure | None:
    """Learning rate of each parameter group (Lightning's LearningRateMonitor: `lr-<optimizer>[/pg<n>]`)."""
    names = [n for n in metrics if n.startswith("lr-")]
    return _line_figure({"learning rate": names}, metrics, lambda _: "learning rate") if names else None


def grad_norm_matrix(metrics: Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-layer gradient norms as (layer names, steps, log10 norms of shape layers x steps); NaN where a
    layer has no value at a step (or a norm of 0)."""
    layers = [n for n in metrics if n.startswith(GRAD_NORM_PREFIX) and n not in GLOBAL_GRAD_NORMS]
    steps = np.unique(np.concatenate([metrics[n][0] for n in layers])) if layers else np.array([], dtype=int)
    matrix = np.full((len(layers), len(steps)), np.nan)
    for row, name in enumerate(layers):
        layer_steps, values = metrics[name]
        with np.errstate(divide="ignore"):
            matrix[row, np.searchsorted(steps, layer_steps)] = np.where(values > 0, np.log10(values), np.nan)
    return [n.removeprefix(GRAD_NORM_PREFIX) for n in layers], steps, matrix


def grad_norm_heatmap(metrics: Series) -> Figure | None:
    """log10 of each layer's gradient L2 norm (rows, in model order) over steps (columns)."""
    layers, steps, matrix = grad_norm_matrix(metrics)
    if not layers:
        return None
    fig = Figure(figsize=(FIGSIZE[0], max(3.0, 1.5 + 0.25 * len(layers))), dpi=DPI)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis")
    ticks = np.unique(np.linspace(0, len(steps) - 1, num=min(len(steps), 8)).astype(int))
    ax.set_xticks(ticks, [str(s) for s in steps[ticks]])
    ax.set_yticks(range(len(layers)), layers, fontsize="small")
    ax.set(title="gradient L2 norm per layer", xlabel="step")
    fig.colorbar(image, ax=ax, label="log10 norm")
    fig.tight_layout()
    return fig


PLOTS: dict[str, Callable[[Series], Figure | None]] = {
    "loss": loss_figure,
    "metrics": metrics_figure,
    "lr": lr_figure,
    "grad_norm_heatmap": grad_norm_heatmap,
}


def write_plots(metrics_csv: str | Path, dirpath: str | Path) -> dict[str, Path]:
    """Draw every plot the metrics allow as `<dirpath>/<name>.png`; returns the written files by name."""
    metrics = read_metrics(metrics_csv)
    dirpath = Path(dirpath)
    written = {}
    for name, draw in PLOTS.items():
        fig = draw(metrics)
        if fig is not None:
            dirpath.mkdir(parents=True, exist_ok=True)
            fig.savefig(dirpath / f"{name}.png", dpi=DPI)
            written[name] = dirpath / f"{name}.png"
    return written


class MetricPlots(L.Callback):
    """At the end of fit, writes loss, metrics, learning-rate and per-layer gradient-norm plots (PNG) into
    `dirpath`, from the metrics of the run's CSV logger (needs `logger.csv`; without it, nothing is drawn)."""

    def __init__(self, dirpath: str):
        self.dirpath = dirpath

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv_logger is None:
            log.info("no plots: they are drawn from the CSV logger's metrics; add it with logger=default")
            return
        csv_logger.save()  # Lightning flushes the CSV only every `flush_logs_every_n_steps`
        metrics_csv = Path(csv_logger.log_dir) / "metrics.csv"
        if not metrics_csv.is_file():  # nothing was logged: no training step ran (e.g. max_epochs=0)
            log.info("no plots: no metrics were logged")
            return
        written = write_plots(metrics_csv, self.dirpath)
        missing = [name for name in PLOTS if name not in written]
        log.info("plots in %s: %s%s", self.dirpath, ", ".join(f"{n}.png" for n in written),
                 f" (no data for {', '.join(missing)})" if missing else "")
