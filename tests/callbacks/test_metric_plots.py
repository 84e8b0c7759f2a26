"""The PNG plots show exactly the curves in the CSV logger's metrics file."""

import math
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger
from matplotlib.image import imread

from chainrule.callbacks.metric_plots import (
    DPI,
    grad_norm_heatmap,
    loss_figure,
    lr_figure,
    metrics_figure,
    read_metrics,
    write_plots,
)

LAYERS = ["blocks.0.linear", "blocks.1.linear", "head"]


def logged_series(with_grad_norms: bool) -> dict[str, dict[int, float]]:
    """What a short run logs: metric name -> {step: value}, with distinct values everywhere."""
    series: dict[str, dict[int, float]] = {
        "train/loss_step": {s: 2.0 * math.exp(-s / 10) + 0.01 * (s % 3) for s in range(0, 30)},
        "lr-AdamW/pg1": {s: 1e-3 * (1 + math.cos(math.pi * s / 30)) / 2 for s in range(0, 30)},
        "train/loss_epoch": {9: 1.5, 19: 0.9, 29: 0.6},
        "val/loss": {9: 1.6, 19: 1.0, 29: 0.7},
        "train/acc_epoch": {9: 0.5, 19: 0.7, 29: 0.8},
        "val/acc": {9: 0.45, 19: 0.65, 29: 0.75},
        "throughput/samples_per_sec": {s: 1000.0 + s for s in range(0, 30, 5)},
    }
    if with_grad_norms:
        for i, layer in enumerate(LAYERS):
            series[f"grad_norm/{layer}"] = {s: 10.0 ** (-i) * (1 + s) for s in range(0, 30, 2)}
        series["grad_norm/global_pre_clip"] = {s: 5.0 for s in range(0, 30, 2)}
        series["grad_norm/global_post_clip"] = {s: 1.0 for s in range(0, 30, 2)}
    return series


def write_metrics_csv(tmp_path: Path, series: dict[str, dict[int, float]]) -> Path:
    """Log `series` through Lightning's real CSVLogger, in step order as training would."""
    logger = CSVLogger(save_dir=tmp_path, name="", version="csv")
    for step in sorted({s for values in series.values() for s in values}):
        row = {name: values[step] for name, values in series.items() if step in values}
        logger.log_metrics(row, step=step)
    logger.save()
    return Path(logger.log_dir) / "metrics.csv"


@pytest.fixture
def metrics_csv(tmp_path: Path) -> Path:
    return write_metrics_csv(tmp_path, logged_series(with_grad_norms=True))


def lines_of(fig) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines()}


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


def test_loss_plot_shows_train_and_val_loss_from_the_csv(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    lines = lines_of(loss_figure(read_metrics(metrics_csv)))
    assert lines.keys() == {"train/loss_step", "train/loss_epoch", "val/loss"}
    for name, (steps, values) in as_lines(series, *lines).items():
        assert lines[name][0] == steps
        assert lines[name][1] == pytest.approx(values, rel=1e-6)


def test_metrics_plot_has_one_panel_per_metric_with_train_and_val(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    fig = metrics_figure(read_metrics(metrics_csv))
    assert [ax.get_title() for ax in fig.axes] == ["acc"]  # loss, lr, throughput, norms have their own plots
    lines = lines_of(fig)
    assert lines.keys() == {"train/acc_epoch", "val/acc"}
    for name, (steps, values) in as_lines(series, *lines).items():
        assert lines[name] == (steps, pytest.approx(values, rel=1e-6))


def test_lr_plot_follows_the_schedule(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    lines = lines_of(lr_figure(read_metrics(metrics_csv)))
    assert lines.keys() == {"lr-AdamW/pg1"}
    steps, values = as_lines(series, "lr-AdamW/pg1")["lr-AdamW/pg1"]
    assert lines["lr-AdamW/pg1"] == (steps, pytest.approx(values, rel=1e-6))


def test_heatmap_rows_are_layers_and_cells_are_log10_gradient_norms(metrics_csv: Path) -> None:
    series = logged_series(with_grad_norms=True)
    ax = grad_norm_heatmap(read_metrics(metrics_csv)).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == LAYERS  # the global norms are not layers
    steps = sorted(series["grad_norm/head"])
    expected = np.array([[math.log10(series[f"grad_norm/{layer}"][s]) for s in steps] for layer in LAYERS])
    np.testing.assert_allclose(ax.images[0].get_array(), expected, rtol=1e-6)
    assert [int(t.get_text()) for t in ax.get_xticklabels()][0] == steps[0]


def test_without_gradient_norms_the_other_plots_are_still_written(tmp_path: Path) -> None:
    csv = write_metrics_csv(tmp_path, logged_series(with_grad_norms=False))
    written = write_plots(csv, tmp_path / "plots")
    assert set(written) == {"loss", "metrics", "lr"}
    assert not (tmp_path / "plots" / "grad_norm_heatmap.png").exists()
