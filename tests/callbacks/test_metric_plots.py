"""The PNG plots show exactly the curves in the CSV logger's metrics file."""

import math
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.image import imread

from chainrule.callbacks.metric_plots import (
    DPI,
    epoch_boundaries,
    grad_norm_heatmap,
    loss_figure,
    lr_figure,
    metrics_figure,
    read_metrics,
    write_plots,
)

LAYERS = ["blocks.0.linear", "blocks.1.linear", "head"]
STEPS_PER_EPOCH = 10


def cosine(peak: float) -> dict[int, float]:
    return {s: peak * (1 + math.cos(math.pi * s / 30)) / 2 for s in range(30)}


def logged_series(with_grad_norms: bool) -> dict[str, dict[int, float]]:
    """What a short run logs: metric name -> {step: value}, with distinct values everywhere. Three epochs of
    ten steps; an epoch's train/*_epoch and val/* at its last step; two parameter groups on one schedule
    and a third on its own; the test's metrics one step after training (Lightning logs them at the next
    epoch, which never trains)."""
    series: dict[str, dict[int, float]] = {
        "train/loss_step": {s: 2.0 * math.exp(-s / 10) + 0.01 * (s % 3) for s in range(30)},
        "lr-AdamW/pg1": cosine(1e-3),
        "lr-AdamW/pg2": cosine(1e-3),
        "lr-AdamW/pg3": cosine(1e-4),
        "train/loss_epoch": {9: 1.5, 19: 0.9, 29: 0.6},
        "val/loss": {9: 1.6, 19: 1.0, 29: 0.7},
        "train/acc_epoch": {9: 0.5, 19: 0.7, 29: 0.8},
        "val/acc": {9: 0.45, 19: 0.65, 29: 0.75},
        "test/acc": {30: 0.7},
        "throughput/samples_per_sec": {s: 1000.0 + s for s in range(0, 30, 5)},
    }
    if with_grad_norms:
        for i, layer in enumerate(LAYERS):
            series[f"grad_norm/{layer}"] = {s: 10.0 ** (-i) * (1 + s) for s in range(0, 30, 2)}
        series["grad_norm/global_pre_clip"] = {s: 5.0 for s in range(0, 30, 2)}
        series["grad_norm/global_post_clip"] = {s: 1.0 for s in range(0, 30, 2)}
    return series


def write_metrics_csv(tmp_path: Path, series: dict[str, dict[int, float]]) -> Path:
    """Log `series` through Lightning's real CSVLogger, in step order as training would; rows of the
    task's metrics carry their epoch, as `LightningModule.log` adds it."""
    logger = CSVLogger(save_dir=tmp_path, name="", version="csv")
    for step in sorted({s for values in series.values() for s in values}):
        row = {name: values[step] for name, values in series.items() if step in values}
        if any(name.startswith(("train/", "val/", "test/")) for name in row):
            row["epoch"] = step // STEPS_PER_EPOCH
        logger.log_metrics(row, step=step)
    logger.save()
    return Path(logger.log_dir) / "metrics.csv"


@pytest.fixture
def metrics_csv(tmp_path: Path) -> Path:
    return write_metrics_csv(tmp_path, logged_series(with_grad_norms=True))


def curves(ax) -> list:
    """The data lines of a panel, without the epoch boundaries."""
    return [line for line in ax.get_lines() if line.get_gid() != "epoch-boundary"]


def lines_of(fig) -> dict[str, tuple[list[float], list[float]]]:
    """Each curve of a figure by the metric it draws (its gid): (steps, values)."""
    return {line.get_gid(): (list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes for line in curves(ax)}


def legend_of(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def as_lines(series: dict[str, dict[int, float]], *names: str) -> dict[str, tuple[list[float], list[float]]]:
    return {name: (sorted(series[name]), [series[name][s] for s in sorted(series[name])]) for name in names}


def test_every_plot_is_a_decodable_png_of_its_figure_size(metrics_csv: Path, tmp_path: Path) -> None:
    written = write_plots(metrics_csv, tmp_path / "plots")
    assert set(written) == {"loss", "metrics", "lr", "grad_norm_heatmap"}
    metrics = read_metrics(metrics_csv)
    figures = {"loss": loss_figure, "metrics": metrics_figure, "lr": lr_figure,
               "grad_norm_heatmap": grad_norm_heatmap}
    for name, path in written.items():
        assert path == tmp_path / "plots" / f"{name}.png"
        pixels = imread(path)
        width, height = figures[name](metrics).get_size_inches() * DPI
        assert pixels.shape[:2] == (round(height), round(width)), name
        assert pixels[..., :3].std() > 0.05, f"{name}.png is blank"


def test_loss_plot_shows_train_and_val_loss_from_the_csv_on_a_log_axis(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    fig = loss_figure(read_metrics(metrics_csv))
    (ax,) = fig.axes
    lines = lines_of(fig)
    assert lines.keys() == {"train/loss_step", "train/loss_epoch", "val/loss"}
    for name, (steps, values) in as_lines(series, *lines).items():
        assert lines[name][0] == steps
        assert lines[name][1] == pytest.approx(values, rel=1e-6)
    assert ax.get_yscale() == "log" and "log" in ax.get_ylabel()
    assert ax.get_xlabel() == "step"
    FigureCanvasAgg(fig).draw()
    ticks = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
    assert {"0.2", "0.5", "1", "2"} <= set(ticks) and not any("e" in t for t in ticks)  # not 2e-01
    assert legend_of(ax) == ["train, per step", "train, per epoch", "validation"]


def test_train_and_validation_have_one_colour_each_in_every_panel(metrics_csv: Path) -> None:
    metrics = read_metrics(metrics_csv)
    for fig in (loss_figure(metrics), metrics_figure(metrics)):
        for ax in fig.axes:
            colours: dict[str, set[str]] = {}
            for line in curves(ax):
                colours.setdefault(line.get_gid().split("/")[0], set()).add(to_hex(line.get_color()))
            assert colours == {"train": {to_hex("C0")}, "val": {to_hex("C1")}}


def test_a_loss_that_is_not_positive_stays_on_a_linear_axis(tmp_path: Path) -> None:
    series = logged_series(with_grad_norms=False)
    series["val/loss"][19] = -0.5  # e.g. a negative log-likelihood
    (ax,) = loss_figure(read_metrics(write_metrics_csv(tmp_path, series))).axes
    assert ax.get_yscale() == "linear" and "log" not in ax.get_ylabel()


def test_epoch_boundaries_are_marked_where_each_epoch_begins(metrics_csv: Path) -> None:
    metrics = read_metrics(metrics_csv)
    assert epoch_boundaries(metrics) == [(9.5, 1), (19.5, 2), (29.5, 3)]
    for fig in (loss_figure(metrics), metrics_figure(metrics), lr_figure(metrics)):
        ax = fig.axes[0]
        marks = [line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "epoch-boundary"]
        assert marks == [9.5, 19.5]  # not 29.5: epoch 3 only tested, it never trained
        (top,) = ax.child_axes  # the epoch axis above the step axis
        assert list(top.get_xticks()) == [9.5, 19.5]
        assert [t.get_text() for t in top.get_xticklabels()] == ["1", "2"]
        assert top.get_xlabel() == "epoch"


def test_a_long_run_marks_at_most_twenty_epochs(tmp_path: Path) -> None:
    steps = range(100 * STEPS_PER_EPOCH)
    series = {"train/loss_step": {s: 1.0 / (1 + s) for s in steps}}
    (ax,) = loss_figure(read_metrics(write_metrics_csv(tmp_path, series))).axes
    marks = [line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "epoch-boundary"]
    assert 10 <= len(marks) <= 20
    assert marks[0] == 9.5 and len(set(np.diff(marks))) == 1  # every n-th epoch


def test_metrics_plot_has_one_panel_per_metric_with_train_and_val(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    fig = metrics_figure(read_metrics(metrics_csv))
    assert [ax.get_title() for ax in fig.axes] == ["acc"]  # loss, lr, throughput, norms have their own plots
    lines = lines_of(fig)
    assert lines.keys() == {"train/acc_epoch", "val/acc"}  # not test/acc: one point, printed at the end
    for name, (steps, values) in as_lines(series, *lines).items():
        assert lines[name] == (steps, pytest.approx(values, rel=1e-6))
    assert legend_of(fig.axes[0]) == ["train, per epoch", "validation"]


def test_lr_plot_draws_one_line_per_distinct_schedule_labelled_with_its_groups(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    fig = lr_figure(read_metrics(metrics_csv))
    (ax,) = fig.axes
    labels = {line.get_gid(): line.get_label() for line in curves(ax)}
    assert labels == {"lr-AdamW/pg1": "lr-AdamW/pg1, lr-AdamW/pg2", "lr-AdamW/pg3": "lr-AdamW/pg3"}
    lines = lines_of(fig)
    for name, (steps, values) in as_lines(series, "lr-AdamW/pg1", "lr-AdamW/pg3").items():
        assert lines[name] == (steps, pytest.approx(values, rel=1e-6))
    assert ax.get_yscale() == "linear"  # a warm-up starts near 0


def test_heatmap_rows_are_layers_and_cells_are_log10_gradient_norms(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    ax = grad_norm_heatmap(read_metrics(metrics_csv)).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == LAYERS  # the global norms are not layers
    steps = sorted(series["grad_norm/head"])
    expected = np.array([[math.log10(series[f"grad_norm/{layer}"][s]) for s in steps] for layer in LAYERS])
    np.testing.assert_allclose(ax.images[0].get_array(), expected, rtol=1e-6)
    assert int(ax.get_xticklabels()[0].get_text()) == steps[0]


def test_without_gradient_norms_the_other_plots_are_still_written(tmp_path: Path) -> None:
    csv = write_metrics_csv(tmp_path, logged_series(with_grad_norms=False))
    written = write_plots(csv, tmp_path / "plots")
    assert set(written) == {"loss", "metrics", "lr"}
    assert not (tmp_path / "plots" / "grad_norm_heatmap.png").exists()
