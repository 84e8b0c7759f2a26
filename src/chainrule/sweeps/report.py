"""`chainrule-sweep-report <sweep dir>`: the trials of a sweep's study sorted by the optimized metric, the
best trial as a ready-to-run command, and plots, written to <sweep dir>/report/.

The sweeper writes the same report when a sweep ends; this command shows it at any time, also while the
sweep runs.
"""

import argparse
import csv
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.exceptions import ExperimentalWarning
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from chainrule.core import console
from chainrule.core.errors import ChainruleError, ConfigError

STUDY_FILE = "study.yaml"
REPORT_DIR = "report"
STATE_ORDER = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING,
               TrialState.FAIL]


def load_study(sweep_dir: Path, storage: str | None = None, study_name: str | None = None) -> optuna.Study:
    """The study of a sweep directory, found through the study file the sweeper writes there; `storage`
    and `study_name` override it (needed when the URL holds a password, which is not written)."""
    from chainrule.sweeps.storage import DEFAULT_DB, default_url, open_storage

    study_file = sweep_dir / STUDY_FILE
    saved = OmegaConf.to_container(OmegaConf.load(study_file)) if study_file.is_file() else {}
    storage = storage or saved.get("storage") or default_url(sweep_dir)
    study_name = study_name or saved.get("study_name")
    if storage == default_url(sweep_dir) and not (sweep_dir / DEFAULT_DB).is_file():
        raise ConfigError(f"no study in {sweep_dir}: it has no {DEFAULT_DB}; pass the sweep directory that "
                          f"`chainrule-train -m hparams_search=...` printed, or --storage URL "
                          f"--study-name NAME")
    if "***" in storage:
        raise ConfigError(f"the storage URL of {sweep_dir} needs its password: pass --storage URL")
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except (KeyError, ValueError) as error:
        raise ConfigError(f"cannot load study '{study_name}' from {storage}: {error}") from None


def metric_name(study: optuna.Study) -> str:
    return study.metric_names[0] if study.metric_names else "value"


def sorted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials best first, then pruned ones (by their last reported value), then the rest."""
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0

    def key(trial: FrozenTrial) -> tuple[int, float, int]:
        value = trial.value if trial.state == TrialState.COMPLETE else _last_value(trial)
        rank = sign * value if value is not None else float("inf")
        return STATE_ORDER.index(trial.state), rank, trial.number

    return sorted(study.get_trials(deepcopy=False), key=key)


def _last_value(trial: FrozenTrial) -> float | None:
    return trial.intermediate_values[trial.last_step] if trial.last_step is not None else None


def _note(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED:
        return f"pruned after epoch {trial.last_step}" if trial.last_step is not None else "pruned"
    if trial.state == TrialState.FAIL:
        if "error" in trial.user_attrs:
            return str(trial.user_attrs["error"]).splitlines()[0]
        if trial.user_attrs.get("interrupted"):
            return "interrupted (queued again)"
        return "worker stopped (stale)"
    return ""


def rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One dict per trial, in report order: trial, state, the metric, each parameter, seconds, note."""
    names = sorted({name for trial in study.get_trials(deepcopy=False) for name in trial.params})
    metric = metric_name(study)
    table = []
    for trial in sorted_trials(study):
        value = trial.value if trial.state == TrialState.COMPLETE else _last_value(trial)
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        table.append({"trial": trial.number, "state": trial.state.name, metric: value,
                      **{name: trial.params.get(name) for name in names}, "seconds": seconds,
                      "note": _note(trial)})
    return table


def best_command(study: optuna.Study) -> str | None:
    """The best completed trial as a chainrule-train command line (its fixed and sampled overrides)."""
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not completed or "overrides" not in study.best_trial.user_attrs:
        return None
    return " ".join(["chainrule-train", *(shlex.quote(o) for o in study.best_trial.user_attrs["overrides"])])


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def save_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optimization history, per-epoch values and parameter importances as PNG files (those that the
    trials so far allow: importances need two completed trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    metric = metric_name(study)
    wanted = {
        "optimization_history.png": lambda: plots.plot_optimization_history(study, target_name=metric),
        "intermediate_values.png": lambda: plots.plot_intermediate_values(study),
        "param_importances.png": lambda: plots.plot_param_importances(study, target_name=metric),
    }
    saved = []
    for name, plot in wanted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plotting is "experimental" in Optuna and says so each call
            try:
                axes = plot()
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                console.say(f"{name}: not drawn ({error})")
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.savefig(out_dir / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        saved.append(out_dir / name)
    return saved


def write_report(study: optuna.Study, sweep_dir: Path) -> Path:
    """Print the trial table and best command, and write trials.csv, best_command.txt and plots to
    <sweep_dir>/report/ (returned)."""
    out_dir = Path(sweep_dir) / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    table_rows = rows(study)
    metric = metric_name(study)

    table = Table(title=f"study {study.study_name}: {study.direction.name.lower()} {metric}")
    columns = list(table_rows[0]) if table_rows else ["trial", "state", metric]
    for column in columns:
        table.add_column(column, justify="left" if column in ("state", "note") else "right")
    for row in table_rows:
        table.add_row(*(_format(row[c]) for c in columns))
    console.say(console.render(table))

    with open(out_dir / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table_rows)

    command = best_command(study)
    if command:
        (out_dir / "best_command.txt").write_text(command + "\n")
        console.say(f"best trial {study.best_trial.number}: {metric}={study.best_value:.4f}")
        console.say(f"run it again with:\n  {command}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        saved = save_plots(study, out_dir)
    console.say(f"report: {out_dir} ({', '.join(p.name for p in saved) or 'no plots yet'})")
    return out_dir


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chainrule-sweep-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory (holds study.yaml and optuna.db)")
    parser.add_argument("--storage", help="storage URL, when not the one in <sweep_dir>/study.yaml")
    parser.add_argument("--study-name", help="study name, when not the one in <sweep_dir>/study.yaml")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with console.plain_console():
            study = load_study(args.sweep_dir.resolve(), args.storage, args.study_name)
            write_report(study, args.sweep_dir.resolve())
    except ChainruleError as error:
        console.error_line(str(error))
        sys.exit(2)


if __name__ == "__main__":
    cli()
