"""Optuna sweeps end to end: real `chainrule-train -m` processes training the digits MLP on a real
SQLite study."""

import csv
import os
import shlex
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from chainrule.sweeps import report
from tests.support.configs import compose_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def six_trials(sweeps, tmp_path_factory) -> Path:
    """A finished 6-trial TPE sweep over learning rate and weight decay (no pruning: every trial ends)."""
    sweep_dir = tmp_path_factory.mktemp("six") / "sweep"
    sweeps.run(sweep_dir, "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler.seed=0",
               "hydra/sweeper/pruner=none")
    return sweep_dir


def test_six_trials_best_clearly_beats_worst(sweeps, six_trials):
    study = sweeps.study(six_trials)
    values = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(values) == 6
    assert max(values) - min(values) > 0.1, values
    assert len({(t.params["optim.lr"], t.params["optim.weight_decay"]) for t in study.trials}) == 6


def test_report_sorts_trials_and_gives_a_runnable_best_command(sweeps, six_trials, capsys):
    report.cli([str(six_trials)])
    out = capsys.readouterr().out
    study = sweeps.study(six_trials)
    with open(six_trials / "report" / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["val/acc"]) for r in rows] == sorted((t.value for t in study.trials), reverse=True)
    assert int(rows[0]["trial"]) == study.best_trial.number
    for plot in ("optimization_history.png", "param_importances.png", "intermediate_values.png"):
        assert (six_trials / "report" / plot).stat().st_size > 10_000

    command = (six_trials / "report" / "best_command.txt").read_text().strip()
    assert "run it again with" in out and "chainrule-train" in out
    program, *overrides = shlex.split(command)
    assert program == "chainrule-train"
    cfg = compose_config(*overrides)
    assert cfg.optim.lr == study.best_params["optim.lr"]
    assert cfg.optim.weight_decay == study.best_params["optim.weight_decay"]
    assert cfg.trainer.max_epochs == sweeps.max_epochs  # the sweep's fixed overrides come along


def test_killed_sweep_resumes_the_same_study(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ("hydra.sweeper.n_trials=6", "hydra.sweeper.heartbeat_interval=1")
    worker = sweeps.start(sweep_dir, *args)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and worker.poll() is None:
            if (sweep_dir / "optuna.db").exists() and sweeps.completed(sweep_dir) >= 3:
                break
            time.sleep(0.3)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    study = sweeps.study(sweep_dir)
    completed_before = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    assert 3 <= len(completed_before) < 6
    # Also a trial whose worker died right after asking for it, before its first heartbeat.
    study.enqueue_trial({"optim.lr": 3e-3, "optim.weight_decay": 1e-3})
    study.ask({"optim.lr": FloatDistribution(1e-5, 1e-1, log=True),
               "optim.weight_decay": FloatDistribution(1e-6, 1e-1, log=True)})
    killed = [t for t in study.trials if t.state == TrialState.RUNNING]

    sweeps.run(sweep_dir, *args)

    assert optuna.get_all_study_names(sweeps.storage(sweep_dir)) == ["digits_mlp"]
    study = sweeps.study(sweep_dir)
    after = {t.number: t for t in study.trials}
    finished = sweeps.states(study)
    assert finished["COMPLETE"] + finished.get("PRUNED", 0) == 6  # n_trials counts trials that ended
    assert {n: after[n].value for n in completed_before} == completed_before  # kept, not re-run
    for trial in killed:  # trials that were running are marked failed and their parameters run again
        assert after[trial.number].state == TrialState.FAIL
        assert any(t.params == trial.params and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   for t in study.trials if t.number > trial.number)


def test_two_workers_share_one_study_without_duplicates(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    workers = [sweeps.start(sweep_dir, "hydra.sweeper.n_trials=6") for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0
    study = sweeps.study(sweep_dir)
    finished = sweeps.states(study)
    assert len(study.trials) == 6 and finished["COMPLETE"] + finished.get("PRUNED", 0) == 6
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 6
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both did some of the work


def test_pruner_stops_hopeless_trials_early(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    study = sweeps.new_study(sweep_dir)
    # A good setting first, then settings no model learns from in 3 epochs.
    study.enqueue_trial({"optim.lr": 1e-2, "optim.weight_decay": 1e-4})
    study.enqueue_trial({"optim.lr": 1e-5, "optim.weight_decay": 1e-1})
    study.enqueue_trial({"optim.lr": 2e-5, "optim.weight_decay": 1e-1})
    sweeps.run(sweep_dir, "hydra.sweeper.n_trials=3", "hydra/sweeper/pruner=median",
               "hydra.sweeper.pruner.n_startup_trials=1")

    trials = sweeps.study(sweep_dir).trials
    assert trials[0].state == TrialState.COMPLETE
    assert len(trials[0].intermediate_values) == sweeps.max_epochs  # reported every epoch
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned
    assert all(t.last_step < sweeps.max_epochs - 1 for t in pruned)
    table = (sweep_dir / "report" / "trials.csv").read_text()
    assert "pruned after epoch" in table


def test_raising_trial_is_failed_and_the_sweep_completes(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    study = sweeps.new_study(sweep_dir)
    for dropout in (1.5, 0.1, 0.0):  # 1.5: torch raises, a dropout must be a probability
        study.enqueue_trial({"model.dropout": dropout})
    sweeps.run(sweep_dir, "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=0.5",
               "++hydra.sweeper.params.model.dropout={type:float,low:0.0,high:1.5}")

    study = sweeps.study(sweep_dir)
    assert sweeps.states(study) == {"FAIL": 1, "COMPLETE": 2}
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL and "dropout" in failed.user_attrs["error"]


def test_sweep_stops_when_failures_exceed_the_rate(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    study = sweeps.new_study(sweep_dir)
    study.enqueue_trial({"model.dropout": 1.5})
    result = sweeps.run(sweep_dir, "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=0",
                        "++hydra.sweeper.params.model.dropout={type:float,low:0.0,high:1.5}", check=False)
    assert result.returncode != 0
    assert "max_failure_rate" in result.stderr
    assert sweeps.states(sweeps.study(sweep_dir)) == {"FAIL": 1}


def test_grid_sampler_runs_each_point_of_command_line_sweeps_once(sweeps, tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweeps.run(sweep_dir, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=10", "optim.lr=0.001,0.01",
               "model.depth=1,2", preset="optuna", epochs=1)
    study = sweeps.study(sweep_dir, study_name="optuna")
    assert sweeps.states(study) == {"COMPLETE": 4}
    assert sorted((t.params["optim.lr"], t.params["model.depth"]) for t in study.trials) == [
        (0.001, 1), (0.001, 2), (0.01, 1), (0.01, 2)]
    for trial in study.trials:  # each ran in its own directory with its values
        overrides = (Path(trial.user_attrs["run_dir"]) / ".hydra" / "overrides.yaml").read_text()
        assert f"optim.lr={trial.params['optim.lr']}" in overrides
