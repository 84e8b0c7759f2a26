"""`chainrule-sweep-report`: table order, best command, files, on a study written with Optuna's own API."""

import csv
import shlex

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from chainrule.sweeps import report
from chainrule.sweeps.storage import default_url

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

LR = FloatDistribution(1e-5, 1e-1, log=True)


@pytest.fixture
def sweep_dir(tmp_path):
    """A study as a sweep leaves it: completed, pruned and failed trials with their overrides."""
    study = optuna.create_study(study_name="lr", storage=default_url(tmp_path), direction="maximize")
    study.set_metric_names(["val/acc"])

    def add(state, lr, value=None, curve=(), **attrs):
        overrides = ["hparams_search=digits_mlp", "trainer.max_epochs=3", f"optim.lr={lr!r}"]
        study.add_trial(create_trial(state=state, params={"optim.lr": lr}, distributions={"optim.lr": LR},
                                     value=value, intermediate_values=dict(enumerate(curve)),
                                     user_attrs={"overrides": overrides, **attrs}))

    add(TrialState.COMPLETE, 1e-3, 0.90, (0.5, 0.8, 0.90))
    add(TrialState.PRUNED, 1e-5, curve=(0.11,))
    add(TrialState.COMPLETE, 3e-2, 0.95, (0.9, 0.93, 0.95))
    add(TrialState.FAIL, 1e-1, error="ValueError: loss is nan")
    add(TrialState.COMPLETE, 1e-4, 0.60, (0.2, 0.4, 0.60))
    (tmp_path / report.STUDY_FILE).write_text("study_name: lr\nstorage: null\n")
    return tmp_path


def test_trials_sorted_best_first_then_pruned_then_failed(sweep_dir):
    rows = report.rows(report.load_study(sweep_dir))
    assert [(r["trial"], r["state"]) for r in rows] == [
        (2, "COMPLETE"), (0, "COMPLETE"), (4, "COMPLETE"), (1, "PRUNED"), (3, "FAIL")]
    assert rows[0]["val/acc"] == 0.95 and rows[3]["val/acc"] == 0.11
    assert rows[3]["note"] == "pruned after epoch 0"
    assert rows[4]["note"] == "ValueError: loss is nan"


def test_cli_writes_table_best_command_and_plots(sweep_dir, capsys):
    report.cli([str(sweep_dir)])
    out = capsys.readouterr().out
    assert "best trial 2: val/acc=0.9500" in out
    files = sweep_dir / report.REPORT_DIR
    command = (files / "best_command.txt").read_text().strip()
    assert shlex.split(command) == ["chainrule-train", "hparams_search=digits_mlp", "trainer.max_epochs=3",
                                    "optim.lr=0.03"]
    with open(files / "trials.csv") as handle:
        assert [row["trial"] for row in csv.DictReader(handle)] == ["2", "0", "4", "1", "3"]
    for plot in ("optimization_history.png", "intermediate_values.png", "param_importances.png"):
        assert (files / plot).read_bytes()[:4] == b"\x89PNG"


def test_cli_on_a_directory_without_a_study_says_what_to_pass(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.cli([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no study in" in capsys.readouterr().err
