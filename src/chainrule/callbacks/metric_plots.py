"""PNG plots of a run's curves in its run directory, drawn from the CSV logger's metrics at the end of
training: a person without a W&B account (or a compute node without a browser) still sees them."""

import csv
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib import ticker
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

log = logging.getLogger(__name__)

DPI = 100
FIGSIZE = (8.0, 4.5)
SPLITS = ("train/", "val/")  # test metrics are one point each, printed at the end of the run instead
GRAD_NORM_PREFIX = "grad_norm/"  # per-layer norms from the gradient-statistics callback
GLOBAL_GRAD_NORMS = ("grad_norm/global_pre_clip", "grad_norm/global_post_clip")

Series = dict[str, tuple[np.ndarray, np.ndarray]]  # metric name -> (steps, values)

EPOCH = "epoch"  # the CSV's epoch column, kept as a series: where epochs begin
MAX_EPOCH_MARKS = 20  # more epochs than this: every n-th boundary is marked, so labels stay readable
SPLIT_NAMES = {"train/": "train", "val/": "validation"}
SPLIT_COLORS = {"train/": "C0", "val/": "C1"}  # one colour per split in every panel


def read_metrics(path: str | Path) -> Series:
    """Each column of a Lightning CSVLogger `metrics.csv` as (global steps, values), empty cells skipped;
    the `epoch` column too, as the epoch of each row that has one."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = {name: ([], []) for name in reader.fieldnames or () if name != "step"}
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


def series_label(name: str) -> str:
    """What a reader sees in a legend: `train/loss_step` -> `train, per step`, `train/loss_epoch` ->
    `train, per epoch`, `val/loss` -> `validation`."""
    split = next(prefix for prefix in SPLIT_NAMES if name.startswith(prefix))
    aggregation = {"_step": ", per step", "_epoch": ", per epoch"}
    return SPLIT_NAMES[split] + next((text for end, text in aggregation.items() if name.endswith(end)), "")


def epoch_boundaries(metrics: Series) -> list[tuple[float, int]]:
    """(x, epoch) where each epoch after the first begins: half a step after the last step logged in the
    epoch before (Lightning logs an epoch's end, train/*_epoch and val/*, at the epoch's last step)."""
    if EPOCH not in metrics:
        return []
    last: dict[int, int] = {}
    for step, epoch in zip(*metrics[EPOCH]):
        last[int(epoch)] = max(last.get(int(epoch), int(step)), int(step))
    return [(last[epoch - 1] + 0.5, epoch) for epoch in sorted(last) if epoch - 1 in last]


def _mark_epochs(ax: Any, boundaries: list[tuple[float, int]], last_step: float) -> None:
    """Dotted vertical lines where epochs begin, numbered on a top axis; only those inside the data (the
    test logs at an epoch that never trained)."""
    inside = [(x, epoch) for x, epoch in boundaries if x < last_step]
    if not inside:
        return
    inside = inside[::math.ceil(len(inside) / MAX_EPOCH_MARKS)]
    for x, _ in inside:
        ax.axvline(x, color="0.6", linewidth=0.8, linestyle=":", gid="epoch-boundary")
    top = ax.secondary_xaxis("top")
    top.set_xticks([x for x, _ in inside], [str(epoch) for _, epoch in inside], fontsize="small")
    top.set_xlabel("epoch", fontsize="small")


def _reading_order(name: str) -> tuple[int, int]:
    """Train before validation; per step, then per epoch."""
    split = list(SPLIT_NAMES).index(name[:name.index("/") + 1])
    return split, 0 if name.endswith("_step") else 1


def _plot_split_series(ax: Any, names: list[str], metrics: Series) -> None:
    """Train and validation curves of one metric: a colour per split; per-step values thin, per-epoch
    values bold with markers."""
    for name in sorted(names, key=_reading_order):
        steps, values = metrics[name]
        per_step = name.endswith("_step")
        split = name[:name.index("/") + 1]
        ax.plot(steps, values, label=series_label(name), gid=name, color=SPLIT_COLORS[split],
                linewidth=0.8 if per_step else 1.8, alpha=0.6 if per_step else 1.0,
                marker=None if per_step or len(steps) >= 30 else "o", markersize=4)


def _log_y_axis(ax: Any) -> None:
    """A log y axis labelled in plain numbers (0.05, 1.3, 2): between the powers of ten too, all of them
    when the curves span about one power of ten, 2 and 5 when they span a few, none beyond."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    span = math.log10(high / low)
    shown = range(1, 10) if span <= 1.2 else (2, 5) if span <= 4 else ()

    def minor(value: float, _position: int) -> str:
        return f"{value:g}" if round(value / 10 ** math.floor(math.log10(value) + 1e-9)) in shown else ""

    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _position: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(minor))


def _line_figure(groups: dict[str, list[str]], metrics: Series, ylabel: Callable[[str], str],
                 plot: Callable[[Any, list[str], Series], None], log_y: bool = False) -> Figure:
    """One panel per group (two columns), against the step, with epoch boundaries marked."""
    fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * max(1, (len(groups) + 1) // 2)), dpi=DPI)
    ncols = 1 if len(groups) == 1 else 2
    nrows = (len(groups) + ncols - 1) // ncols
    boundaries = epoch_boundaries(metrics)
    for i, (title, names) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        plot(ax, names, metrics)
        # A log axis shows a loss falling from 2.3 to 0.01 as clearly at the end as at the start; it needs
        # positive values.
        if log_y and all((metrics[n][1] > 0).all() for n in names):
            _log_y_axis(ax)
        scale = " (log scale)" if ax.get_yscale() == "log" else ""
        ax.set(title=title, xlabel="step", ylabel=ylabel(title) + scale)
        _mark_epochs(ax, boundaries, max(metrics[n][0].max() for n in names))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def loss_figure(metrics: Series) -> Figure | None:
    """Training loss per step and per epoch, and validation loss, on a log axis."""
    names = [n for n in metrics if n.startswith(SPLITS) and metric_base(n) == "loss"]
    if not names:
        return None
    return _line_figure({"loss": names}, metrics, lambda _: "loss", _plot_split_series, log_y=True)


def metrics_figure(metrics: Series) -> Figure | None:
    """One panel per task metric (accuracy, ...), its train and validation curves together."""
    groups: dict[str, list[str]] = {}
    for name in metrics:
        if name.startswith(SPLITS) and metric_base(name) != "loss":
            groups.setdefault(metric_base(name), []).append(name)
    return _line_figure(groups, metrics, lambda title: title, _plot_split_series) if groups else None


def distinct_schedules(metrics: Series) -> dict[str, str]:
    """The learning-rate series (Lightning's LearningRateMonitor: `lr-<optimizer>[/pg<n>]`) that differ,
    each by one of its names, with the label of all the parameter groups that share it."""
    schedules: dict[str, list[str]] = {}
    for name in (n for n in metrics if n.startswith("lr-")):
        steps, values = metrics[name]
        same = next((first for first in schedules if np.array_equal(metrics[first][0], steps)
                     and np.array_equal(metrics[first][1], values)), None)
        schedules.setdefault(same or name, []).append(name)
    return {first: ", ".join(names) for first, names in schedules.items()}


def _plot_schedules(ax: Any, names: list[str], metrics: Series) -> None:
    for name, label in distinct_schedules({n: metrics[n] for n in names}).items():
        steps, values = metrics[name]
        ax.plot(steps, values, label=label, gid=name)


def lr_figure(metrics: Series) -> Figure | None:
    """The learning rate: a line per distinct schedule, labelled with the parameter groups that follow it."""
    names = [n for n in metrics if n.startswith("lr-")]
    if not names:
        return None
    return _line_figure({"learning rate": names}, metrics, lambda _: "learning rate", _plot_schedules)


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
