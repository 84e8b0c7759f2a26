"""Real training runs through `chainrule-train`, checked in the offline W&B run files they leave.

Every run has W&B's and HOME's directories inside the test's temporary directory and no credentials.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from chainrule.checkpointing.discovery import newest_intact_checkpoint
from chainrule.loggers.wandb import run_id_path
from tests.loggers.conftest import isolated_env, stray_dir, train, train_args
from tests.support.metrics import metric_columns
from tests.support.processes import start
from tests.support.wandb_runs import history, offline_runs, run_record, summary

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    return subprocess.run(["git", "-C", str(repo), *identity, *args], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The default config (logger=default: W&B + CSV), no credentials and no WANDB_MODE, started from a
    git repository with an uncommitted change, inside a (pretend) SLURM job; histograms every 2 steps."""
    tmp = tmp_path_factory.mktemp("default_run")
    project = tmp / "project"
    project.mkdir()
    git(project, "init", "-q")
    (project / "notes.txt").write_text("v1\n")
    git(project, "add", "notes.txt")
    git(project, "commit", "-q", "-m", "first")
    (project / "notes.txt").write_text("v2\n")  # tracked and changed: dirty
    env = isolated_env(tmp, WANDB_MODE=None, SLURM_JOB_ID="4242", SLURMD_NODENAME="node7")
    run_dir = tmp / "run"
    done = train(run_dir, "callbacks.gradient_histograms.every_n_steps=2", env=env, cwd=project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = offline_runs(run_dir)
    return SimpleNamespace(tmp=tmp, project=project, run_dir=run_dir, out=done.stdout + done.stderr,
                           runs=runs, history=history(runs[0]), summary=summary(runs[0]),
                           record=run_record(runs[0]))


def test_default_run_without_credentials_is_offline_in_its_run_dir(default_run: SimpleNamespace) -> None:
    assert len(default_run.runs) == 1
    assert re.search(r"W&B offline, new run \w+ \(no W&B credentials", default_run.out)
    assert default_run.summary["state"] == "finished" and default_run.summary["exit_code"] == 0
    # Nothing went where W&B writes by default (WANDB_DIR, the working directory).
    assert not stray_dir(default_run.tmp).exists()
    assert not (default_run.project / "wandb").exists()


def test_run_file_holds_the_flattened_resolved_config(default_run: SimpleNamespace) -> None:
    config = default_run.summary["config"]
    saved = yaml.safe_load((default_run.run_dir / ".hydra" / "config.yaml").read_text())
    assert config["optim.lr"] == saved["optim"]["lr"]
    assert config["trainer.max_epochs"] == 2 and config["trainer.limit_train_batches"] == 5
    assert config["model._target_"] == saved["model"]["_target_"]
    assert config["paths.output_dir"] == str(default_run.run_dir)  # resolved, not "${hydra:...}"
    assert default_run.record["tags"] == saved["tags"]


def test_run_file_holds_git_slurm_host_and_parameter_counts(default_run: SimpleNamespace) -> None:
    config = default_run.summary["config"]
    assert config["run_info.git_commit"] == git(default_run.project, "rev-parse", "HEAD")
    assert config["run_info.git_dirty"] is True
    assert config["run_info.slurm_job_id"] == "4242" and config["run_info.slurm_node"] == "node7"
    assert config["run_info.host"] == socket.gethostname()
    weights = torch.load(default_run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # The model's weights (the checkpoint also holds the training epoch's running metrics)
    assert config["run_info.params_total"] == sum(t.numel() for k, t in weights.items() if k.startswith("model."))
    assert config["run_info.params_trainable"] == config["run_info.params_total"]


def test_history_holds_train_val_metrics_lr_and_throughput(default_run: SimpleNamespace) -> None:
    rows = default_run.history
    logged = {key for row in rows for key in row}
    assert {"train/loss_step", "train/loss_epoch", "val/loss", "val/acc", "test/acc", "trainer/global_step",
            "throughput/samples_per_sec"} <= logged
    assert any(key.startswith("lr-") for key in logged)
    # The same curve as the CSV logger's, at the same steps.
    wandb_loss = [(row["trainer/global_step"], row["train/loss_step"])
                  for row in rows if "train/loss_step" in row]
    csv_loss = metric_columns(default_run.run_dir)["train/loss_step"]
    assert [s for s, _ in wandb_loss] == [s for s, _ in csv_loss] and len(csv_loss) == 10
    assert [v for _, v in wandb_loss] == pytest.approx([v for _, v in csv_loss], rel=1e-6)
    assert all(row["throughput/samples_per_sec"] > 0 for row in rows if "throughput/samples_per_sec" in row)


def test_gradient_histograms_of_every_parameter_every_n_steps(default_run: SimpleNamespace) -> None:
    weights = torch.load(default_run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    params = [name.removeprefix("model.") for name in weights if name.startswith("model.")]  # as in the model
    for param in params:
        hists = [row for row in default_run.history if f"gradients/{param}._type" in row]
        assert all(row[f"gradients/{param}._type"] == "histogram" for row in hists)
        # 10 optimizer steps (0-9), histograms every 2: at steps 0, 2, 4, 6, 8.
        assert [row["trainer/global_step"] for row in hists] == [0, 2, 4, 6, 8], param
        assert sum(hists[-1][f"gradients/{param}.values"]) == weights[f"model.{param}"].numel()


def test_per_layer_gradient_norms_reach_wandb(default_run: SimpleNamespace) -> None:
    """The gradient-statistics callback logs `grad_norm/*` through every logger; W&B gets them all."""
    in_csv = {name for name in metric_columns(default_run.run_dir) if name.startswith("grad_norm/")}
    if not in_csv:
        pytest.skip("no gradient-norm callback in the default callbacks: no grad_norm/* in the CSV metrics")
    logged = {key for row in default_run.history for key in row}
    assert in_csv <= logged
    assert {"grad_norm/global_pre_clip", "grad_norm/global_post_clip"} <= logged
    assert len(in_csv - {"grad_norm/global_pre_clip", "grad_norm/global_post_clip"}) >= 2  # per layer
    assert (default_run.run_dir / "plots" / "grad_norm_heatmap.png").is_file()


def test_run_id_is_stored_and_the_sync_command_printed(default_run: SimpleNamespace) -> None:
    run_id = default_run.record["run_id"]
    assert run_id_path(default_run.run_dir).read_text().strip() == run_id
    assert default_run.runs[0].name.endswith(run_id)
    assert f"wandb sync {default_run.runs[0]}\n" in default_run.out


def test_png_plots_are_written_into_the_run_dir(default_run: SimpleNamespace) -> None:
    from matplotlib.image import imread

    for name in ("loss", "metrics", "lr"):
        pixels = imread(default_run.run_dir / "plots" / f"{name}.png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels[..., :3].std() > 0.05, name


def test_api_key_never_reaches_a_file_and_an_unreachable_server_means_offline(tmp_path: Path) -> None:
    secret = "f00dfeed" * 5
    with socket.socket() as probe:  # a port where nothing listens: the "server" is unreachable
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = isolated_env(tmp_path, WANDB_MODE=None, WANDB_API_KEY=secret,
                       WANDB_BASE_URL=f"http://127.0.0.1:{port}")
    run_dir = tmp_path / "run"
    done = train(run_dir, "trainer.max_epochs=1", "test=false", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is not reachable" in done.stdout and len(offline_runs(run_dir)) == 1
    assert secret not in done.stdout + done.stderr
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []


def test_online_without_credentials_is_one_clear_error_before_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = isolated_env(tmp_path, WANDB_MODE=None)
    done = train(run_dir, "logger.wandb.mode=online", env=env, cwd=tmp_path)
    assert done.returncode != 0
    assert "W&B online mode needs credentials: set WANDB_API_KEY or run `wandb login`" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.multiprocess
def test_two_rank_ddp_run_makes_exactly_one_wandb_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = train(run_dir, "++trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                 env=isolated_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = list(tmp_path.rglob("offline-run-*"))
    assert runs == offline_runs(run_dir) and len(runs) == 1
    assert summary(runs[0])["config"]["run_info.world_size"] == 2
    assert any("train/loss_step" in row for row in history(runs[0]))
    assert not stray_dir(tmp_path).exists()


def test_killed_run_resumes_the_same_wandb_run_at_the_checkpoint_step(tmp_path: Path) -> None:
    run_dir, env = tmp_path / "run", isolated_env(tmp_path)
    # Long enough to still be training when killed; early stopping off so it cannot end by itself.
    first = start("chainrule-train", *train_args(run_dir, "trainer.max_epochs=200",
                                                 "callbacks.early_stopping=null"),
                  cwd=tmp_path, env=env, output=subprocess.DEVNULL, new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(run_dir.glob("checkpoints/*.ckpt")) and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Train on past the checkpoint, and past a write of the W&B file (logger.wandb.flush_interval_s=2).
        time.sleep(3.0)
        assert first.poll() is None, "the first run ended before it could be killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # the whole job, W&B's service process included
        first.wait()
    # Resume as a requeued job would: the same run directory, from its newest intact checkpoint.
    newest = newest_intact_checkpoint(run_dir)
    assert newest is not None
    checkpoint = torch.load(newest, weights_only=True)
    ckpt_step, ckpt_epoch = checkpoint["global_step"], checkpoint["epoch"]
    assert ckpt_step > 0
    saved = tmp_path / "killed.ckpt"
    shutil.copy(newest, saved)

    resumed = train(run_dir, f"ckpt_path={saved}", f"trainer.max_epochs={ckpt_epoch + 2}",
                    "callbacks.early_stopping=null", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    pieces = offline_runs(run_dir)
    assert len(pieces) == 2  # one offline piece per process, both the same W&B run
    run_id = run_id_path(run_dir).read_text().strip()
    assert [run_record(p)["run_id"] for p in pieces] == [run_id, run_id]
    assert f"W&B offline, resumed run {run_id}" in resumed.stdout
    assert f"wandb sync {pieces[0]} {pieces[1]}\n" in resumed.stdout

    def train_steps(piece: Path) -> list[int]:
        return [row["trainer/global_step"] for row in history(piece) if "train/loss_step" in row]

    fresh, continued = train_steps(pieces[0]), train_steps(pieces[1])
    assert fresh[0] == 0
    assert continued[0] == ckpt_step  # picks up exactly where the checkpoint left off
    assert continued == sorted(continued) and continued[-1] > ckpt_step
    steps = [row["trainer/global_step"] for row in history(pieces[1]) if "trainer/global_step" in row]
    assert min(steps) >= ckpt_step


def test_exception_in_training_marks_the_run_failed_and_exits_within_30s(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # Strict early stopping on a metric nobody logs raises at the end of the first validation, mid-training.
    bad = ["callbacks.early_stopping.monitor=val/missing", "callbacks.early_stopping.strict=true"]
    process = start("chainrule-train", *train_args(run_dir, *bad), cwd=tmp_path, env=isolated_env(tmp_path))
    deadline = time.monotonic() + 240
    while not list(run_dir.glob("wandb/offline-run-*/*.wandb")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wandb_started = time.monotonic()  # training starts after this; the exception comes after that
    out, _ = process.communicate(timeout=120)
    after_start = time.monotonic() - wandb_started
    assert process.returncode != 0
    assert after_start < 30, f"exited {after_start:.1f} s after W&B started"
    assert "val/missing" in out
    (run,) = offline_runs(run_dir)
    state = summary(run)
    assert state["state"] == "failed" and state["exit_code"] != 0
    assert any("train/loss_step" in row for row in history(run))  # it failed mid-training
    assert re.search(rf"wandb sync {re.escape(str(run))}\n", out)


def test_sweep_jobs_share_a_group_are_named_by_what_differs_and_watch_anew(tmp_path: Path) -> None:
    """Two jobs in one process; each uses W&B's own hooks (wandb.watch), which must attach afresh."""
    sweep_dir = tmp_path / "sweep"
    done = train(sweep_dir, "trainer.max_epochs=1", "test=false", "optim.lr=0.01,0.002",
                 "logger.wandb.watch=all", "logger.wandb.watch_log_freq=1",
                 "callbacks.gradient_histograms=null", multirun=True, env=isolated_env(tmp_path),
                 cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = [run for job in ("0", "1") for run in offline_runs(sweep_dir / job)]
    records = [run_record(run) for run in runs]
    assert len(records) == 2 and records[0]["run_id"] != records[1]["run_id"]
    assert records[0]["run_group"] == records[1]["run_group"] == "train-sweep"
    # Only the swept key, not the fixed overrides every job shares.
    assert [r["display_name"] for r in records] == ["train optim.lr=0.01", "train optim.lr=0.002"]
    for run in runs:  # gradients and (from the forward hook on the task's model) parameters, unprefixed
        logged = {key for row in history(run) for key in row}
        assert {"gradients/head.weight._type", "parameters/head.weight._type"} <= logged
        assert not any("graph_" in key for key in logged)
