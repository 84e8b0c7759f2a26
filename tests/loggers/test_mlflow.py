"""MLflow as chainrule's logger, read back through MLflow's own client: what one run records (params,
metric history by step, artifacts), the same MLflow run continued after a SIGKILL and a resume, sweep
naming, one run per DDP job; and, without training, how the logger keeps its run and rewinds a store."""

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from chainrule.checkpointing.discovery import newest_intact_checkpoint
from chainrule.core.errors import ConfigError
from chainrule.loggers.mlflow import (
    MLFlowLogger,
    check_store,
    delete_metrics_from,
    run_id_path,
    run_name_and_group,
)
from tests.loggers.conftest import isolated_env, train
from tests.support.interruptions import output, pause_at, start, start_resume, wait_until
from tests.support.metrics import metric_columns
from tests.support.presets import DETERMINISTIC_RUN, DETERMINISTIC_RUN_STEPS

# Columns that measure time, not training: they differ between any two runs.
TIMING = ("throughput/",)


def tracking_uri(where: Path) -> str:
    """The store a run started in `where` logs to (conf/logger/mlflow.yaml: <log dir>/mlflow.db)."""
    return f"sqlite:///{where / 'logs' / 'mlflow.db'}"


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every value MLflow holds for `key`, in step order (then logging order)."""
    values = client.get_metric_history(run_id, key)
    return [(m.step, m.value) for m in sorted(values, key=lambda m: (m.step, m.timestamp))]


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifact_files(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def assert_history_equals_csv(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    """Every metric of the CSV logger, step by step and value by value, is MLflow's history of it: one
    value per step, on the same step axis."""
    columns = {name: values for name, values in metric_columns(run_dir).items()
               if not name.startswith(TIMING)}
    assert "train/loss_step" in columns and "val/loss" in columns
    for name, expected in columns.items():
        logged = history(client, run_id, name)
        assert [step for step, _ in logged] == [step for step, _ in expected], name
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6), name


# --- without training ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for this module's in-process tests (creating one takes a second)."""
    uri = tracking_uri(tmp_path_factory.mktemp("store"))
    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    MlflowClient(uri).search_experiments()
    return uri


def make_logger(uri: str, run_dir: Path, name: str = "unit") -> MLFlowLogger:
    return MLFlowLogger(experiment_name=name, tracking_uri=uri, artifact_location=str(run_dir / "artifacts"),
                        run_dir=str(run_dir), artifacts={}, tags=["dev"], group=None)


def test_a_new_run_stores_its_id_and_a_second_logger_continues_it(store: str, tmp_path: Path) -> None:
    first = make_logger(store, tmp_path)
    first.log_metrics({"train/loss_step": 1.0}, step=0)
    first.finalize("success")
    assert run_id_path(tmp_path).read_text().strip() == first.run_id
    assert MlflowClient(store).get_run(first.run_id).info.status == "FINISHED"

    second = make_logger(store, tmp_path)  # what a resumed process builds
    assert second.run_id == first.run_id
    assert MlflowClient(store).get_run(first.run_id).info.status == "RUNNING"  # reopened
    second.log_metrics({"train/loss_step": 0.5}, step=1)
    assert history(MlflowClient(store), first.run_id, "train/loss_step") == [(0, 1.0), (1, 0.5)]


def test_a_stored_run_missing_from_the_store_starts_a_new_one(store: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    run_id_path(tmp_path).write_text("0123456789abcdef0123456789abcdef\n")
    logger = make_logger(store, tmp_path)
    assert logger.run_id != "0123456789abcdef0123456789abcdef"
    assert run_id_path(tmp_path).read_text().strip() == logger.run_id
    assert "MLflow run 0123456789abcdef0123456789abcdef" in caplog.text and "is not in" in caplog.text


def test_params_are_flat_override_keys_and_a_changed_value_becomes_a_tag(store: str, tmp_path: Path) -> None:
    config = {"optim": {"lr": 0.001, "betas": [0.9, 0.999]}, "trainer": {"max_epochs": 20, "strategy": None},
              "train": True, "name": "unit", "long": "x" * 7000}
    first = make_logger(store, tmp_path)
    first.log_hyperparams(config)
    params = MlflowClient(store).get_run(first.run_id).data.params
    assert params["optim.lr"] == "0.001" and params["optim.betas"] == "[0.9, 0.999]"
    assert params["trainer.strategy"] == "null" and params["train"] == "true" and params["name"] == "unit"
    assert params["long"] == "x" * 6000  # MLflow's limit (Lightning's own logger cuts at 250)

    resumed = make_logger(store, tmp_path)
    resumed.log_hyperparams({**config, "trainer": {"max_epochs": 30, "strategy": None}, "extra": 1})
    run = MlflowClient(store).get_run(first.run_id)
    assert run.data.params["trainer.max_epochs"] == "20"  # MLflow never changes a param
    assert run.data.tags["changed.trainer.max_epochs"] == "30"
    assert run.data.params["extra"] == "1"
    assert [key for key in run.data.tags if key.startswith("changed.")] == ["changed.trainer.max_epochs"]


def test_rewind_deletes_the_values_from_the_step_on_and_fixes_the_latest(store: str, tmp_path: Path) -> None:
    logger = make_logger(store, tmp_path)
    for step in range(6):
        logger.log_metrics({"a": float(step), **({"b": 10.0 + step} if step % 2 else {})}, step=step)
    logger.log_metrics({"c": 7.0}, step=5)
    logger.rewind(3)
    client = MlflowClient(store)
    assert history(client, logger.run_id, "a") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert history(client, logger.run_id, "b") == [(1, 11.0)]
    assert history(client, logger.run_id, "c") == []
    latest = client.get_run(logger.run_id).data.metrics  # MLflow's summary: the latest value of each
    assert latest == {"a": 2.0, "b": 11.0}
    logger.log_metrics({"a": 30.0}, step=3)  # what the resumed run logs next
    assert history(client, logger.run_id, "a")[-1] == (3, 30.0)
    assert client.get_run(logger.run_id).data.metrics["a"] == 30.0


def test_a_tracking_server_cannot_delete_values() -> None:
    from mlflow.tracking._tracking_service.utils import _get_store

    server = _get_store("http://127.0.0.1:9")  # not contacted: the store's kind decides
    assert delete_metrics_from(server, "any", 3) is None


def test_artifacts_are_the_named_folders_and_the_resolved_config(store: str, tmp_path: Path) -> None:
    plots, record = tmp_path / "plots", tmp_path / ".hydra"
    plots.mkdir()
    record.mkdir()
    (plots / "loss.png").write_bytes(b"\x89PNG fake")
    (record / "config.yaml").write_text("seed: 1\n")
    logger = MLFlowLogger(experiment_name="unit", tracking_uri=store, artifact_location=str(tmp_path / "a"),
                          run_dir=str(tmp_path), artifacts={"plots": str(plots), "config": str(record),
                                                            "absent": None, "missing": str(tmp_path / "no")},
                          tags=None, group=None)
    logger.log_hyperparams({"seed": 1, "optim": {"lr": 0.1}})
    logger.log_hyperparams({"run_info": {"host": "h"}})
    logger.finalize("success")
    client = MlflowClient(store)
    assert sorted(artifact_files(client, logger.run_id)) == [
        "config/config.yaml", "config/resolved.yaml", "plots/loss.png"]
    resolved = yaml.safe_load(Path(client.download_artifacts(logger.run_id, "config/resolved.yaml",
                                                             str(tmp_path / "down"))).read_text())
    assert resolved == {"seed": 1, "optim": {"lr": 0.1}, "run_info": {"host": "h"}}


def test_runs_are_named_after_the_run_dir_or_what_a_multirun_job_changes() -> None:
    assert run_name_and_group("train", "/logs/train/runs/2026-11-27_23-24-34", None, None, "") == (
        "train 2026-11-27_23-24-34", None)
    assert run_name_and_group("train", "/m/sweep/1", None, "/m/sweep", "optim.lr=0.1") == (
        "train optim.lr=0.1", "train-sweep")
    assert run_name_and_group("train", "/m/sweep/1", "study", "/m/sweep", "optim.lr=0.1")[1] == "study"


def test_artifacts_of_a_server_on_this_disk_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="artifact_location=null"):
        check_store("http://mlflow.example.org:5000", str(tmp_path))
    check_store(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path))


def test_a_server_that_does_not_answer_is_refused_at_once() -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"the MLflow server http://127.0.0.1:{port} is not reachable"):
        check_store(f"http://127.0.0.1:{port}", None)
    assert time.monotonic() - started < 10  # not MLflow's minutes of retries


@pytest.mark.slow
def test_mlflow_is_imported_only_by_runs_that_use_it() -> None:
    """`import mlflow` takes about a second: building the logger imports it, importing its module does not."""
    script = ("import sys; import chainrule.cli.train, chainrule.config.builders, chainrule.loggers.mlflow, "
              "chainrule.callbacks.metric_plots, lightning.pytorch.loggers; print('mlflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-3000:]


@pytest.mark.slow
def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """MLflow alone fails here (the processes race to create the tables); the logger holds a lock. Both
    processes import everything first and start together, when `go` appears."""
    uri, go = f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}", tmp_path / "go"
    script = ("import sys, time, pathlib, mlflow; from chainrule.loggers.mlflow import MLFlowLogger as M\n"
              "print('ready', flush=True)\n"
              "while not pathlib.Path(sys.argv[3]).exists(): time.sleep(0.001)\n"
              "M(experiment_name='race', tracking_uri=sys.argv[1], artifact_location=None, "
              "run_dir=sys.argv[2], artifacts={}, tags=None, group=None).log_metrics({'x': 1.0}, step=0)")
    processes = [subprocess.Popen([sys.executable, "-c", script, uri, str(tmp_path / f"run{i}"), str(go)],
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for i in range(2)]
    for process in processes:
        assert process.stdout.readline() == "ready\n"
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)[-3000:]
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("race").experiment_id])) == 2


# --- real training runs ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """chainrule-train logger=mlflow: two short epochs, a metric row per step, then test."""
    tmp = tmp_path_factory.mktemp("mlflow_run")
    run_dir = tmp / "run"
    done = train(run_dir, "logger=mlflow", env=isolated_env(tmp), cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(tracking_uri(tmp))
    run = client.get_run(run_id_path(run_dir).read_text().strip())
    return SimpleNamespace(tmp=tmp, run_dir=run_dir, client=client, run=run, out=done.stdout + done.stderr)


@pytest.mark.slow
def test_the_run_is_one_finished_mlflow_run_named_after_its_experiment_and_run_dir(
        mlflow_run: SimpleNamespace) -> None:
    client, run = mlflow_run.client, mlflow_run.run
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run.info.run_id]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train run"  # <name> <run dir name>
    assert run.data.tags["dev"] == "" and run.data.tags["run_dir"] == str(mlflow_run.run_dir)
    # Artifacts under the log directory, beside the store.
    assert run.info.artifact_uri.startswith(str(mlflow_run.tmp / "logs" / "mlflow-artifacts" / "train"))
    # The header names the run, the summary says how to see it.
    uri = tracking_uri(mlflow_run.tmp)
    assert f"MLflow, new run {run.info.run_id} (train run) in {uri}" in mlflow_run.out
    assert f"see MLflow run {run.info.run_id} (experiment train): mlflow ui --backend-store-uri {uri}\n" \
        in mlflow_run.out


@pytest.mark.slow
def test_params_are_the_resolved_config_flattened(mlflow_run: SimpleNamespace) -> None:
    params = mlflow_run.run.data.params
    saved = yaml.safe_load((mlflow_run.run_dir / ".hydra" / "config.yaml").read_text())
    assert params["optim.lr"] == json.dumps(saved["optim"]["lr"])
    assert params["trainer.max_epochs"] == "2" and params["trainer.limit_train_batches"] == "5"
    assert params["model._target_"] == saved["model"]["_target_"]
    assert params["paths.output_dir"] == str(mlflow_run.run_dir)  # resolved, not "${hydra:...}"
    assert params["logger.mlflow.tracking_uri"] == tracking_uri(mlflow_run.tmp)
    assert int(params["run_info.params_total"]) > 0  # run_info, logged by the run-metadata callback
    assert params["run_info.params_trainable"] == params["run_info.params_total"]
    assert not any(key.startswith("changed.") for key in mlflow_run.run.data.tags)


@pytest.mark.slow
def test_metric_history_by_step_is_the_csv_loggers(mlflow_run: SimpleNamespace) -> None:
    assert_history_equals_csv(mlflow_run.client, mlflow_run.run.info.run_id, mlflow_run.run_dir)
    logged = set(mlflow_run.run.data.metrics)
    assert {"train/loss_step", "train/loss_epoch", "val/loss", "val/acc", "test/acc",
            "throughput/samples_per_sec"} <= logged
    assert any(key.startswith("lr-") for key in logged)
    assert len(history(mlflow_run.client, mlflow_run.run.info.run_id, "train/loss_step")) == 10


@pytest.mark.slow
def test_artifacts_are_the_png_plots_and_the_config(mlflow_run: SimpleNamespace) -> None:
    client, run_id, run_dir = mlflow_run.client, mlflow_run.run.info.run_id, mlflow_run.run_dir
    files = artifact_files(client, run_id)
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert {"loss.png", "metrics.png", "lr.png"} <= set(pngs)
    assert sorted(f.removeprefix("plots/") for f in files if f.startswith("plots/")) == pngs
    assert {"config/config.yaml", "config/overrides.yaml", "config/resolved.yaml"} <= set(files)
    down = Path(client.download_artifacts(run_id, "", str(mlflow_run.tmp / "downloaded")))
    for png in pngs:  # the files drawn at the end of fit, byte for byte
        assert (down / "plots" / png).read_bytes() == (run_dir / "plots" / png).read_bytes()
    assert (down / "config" / "config.yaml").read_text() == (run_dir / ".hydra" / "config.yaml").read_text()
    resolved = yaml.safe_load((down / "config" / "resolved.yaml").read_text())
    assert resolved["paths"]["output_dir"] == str(run_dir) and resolved["trainer"]["max_epochs"] == 2
    assert str(resolved["run_info"]["params_total"]) == mlflow_run.run.data.params["run_info.params_total"]


@pytest.mark.slow
def test_killed_after_a_checkpoint_and_resumed_continues_the_same_mlflow_run(tmp_path: Path) -> None:
    """Killed mid-epoch with steps after its last checkpoint (every 4 steps) already logged; resumed
    with `resume=<run dir>`: the same MLflow run, one value per step, equal to the CSV history (which
    tests/training/test_kill_resume.py proves equal to an uninterrupted run's)."""
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    preset = [o for o in DETERMINISTIC_RUN if not o.startswith("logger=")] + ["logger=mlflow",
                                                                              "trainer.log_every_n_steps=1"]
    process = start(run_dir, *pause_at(7, "train_batch_start", marker), preset=preset)
    wait_until(marker.exists, process, run_dir)
    process.kill()
    process.wait(timeout=60)
    client = MlflowClient(tracking_uri(tmp_path))
    run_id = run_id_path(run_dir).read_text().strip()
    checkpoint_step = torch.load(newest_intact_checkpoint(run_dir), weights_only=True)["global_step"]
    before = history(client, run_id, "train/loss_step")
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: nobody marked it
    assert [s for s, _ in before] == list(range(7)) and checkpoint_step == 4  # steps 4-6 to be logged again

    resumed = start_resume(run_dir)
    assert resumed.wait(timeout=300) == 0, output(run_dir)[-3000:]
    assert run_id_path(run_dir).read_text().strip() == run_id
    assert f"MLflow, resumed run {run_id}" in output(run_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    assert len(client.search_runs([experiment.experiment_id])) == 1
    after = history(client, run_id, "train/loss_step")
    assert [s for s, _ in after] == list(range(DETERMINISTIC_RUN_STEPS))
    assert after[:checkpoint_step] == before[:checkpoint_step]  # the history before the checkpoint stays
    assert_history_equals_csv(client, run_id, run_dir)
    assert {"plots/loss.png", "config/resolved.yaml"} <= set(artifact_files(client, run_id))


@pytest.mark.slow
def test_sweep_jobs_are_named_by_what_differs_and_share_a_group(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    done = train(sweep_dir, "logger=mlflow", "trainer.max_epochs=1", "test=false", "optim.lr=0.01,0.002",
                 multirun=True, env=isolated_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(tracking_uri(tmp_path))
    runs = [client.get_run(run_id_path(sweep_dir / job).read_text().strip()) for job in ("0", "1")]
    assert [r.info.run_name for r in runs] == ["train optim.lr=0.01", "train optim.lr=0.002"]
    assert [r.data.tags["group"] for r in runs] == ["train-sweep", "train-sweep"]
    assert [r.data.params["optim.lr"] for r in runs] == ["0.01", "0.002"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_rank_ddp_run_makes_exactly_one_mlflow_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = train(run_dir, "logger=mlflow", "++trainer.strategy=ddp", "trainer.devices=2",
                 "trainer.accelerator=cpu", env=isolated_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(tracking_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert run.info.run_id == run_id_path(run_dir).read_text().strip()
    assert run.data.params["run_info.world_size"] == "2"
    assert_history_equals_csv(client, run.info.run_id, run_dir)


@pytest.fixture(autouse=True)
def _no_global_tracking_uri() -> Iterator[None]:
    """Lightning's logger sets MLflow's process-wide tracking URI; leave none behind for other tests."""
    yield
    mlflow.set_tracking_uri(None)
