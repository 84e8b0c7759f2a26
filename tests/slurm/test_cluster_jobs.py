"""chainrule-submit and the submitit sweep launcher against the real local cluster (slurm/local/).

All jobs of this module are submitted at once by the `jobs` fixture and run side by side on the two
nodes; each test then waits for the jobs it checks. Preemption is real: `scancel --signal=USR1` and
`scontrol requeue` are sent while a job trains, by background threads that watch for its first
checkpoint.
"""

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.slurm.conftest import Job, LocalCluster, python_module
from tests.support.checkpoints import read_checkpoint
from tests.support.wandb_runs import offline_runs

pytestmark = [pytest.mark.slurm, pytest.mark.multiprocess, pytest.mark.slow]

# Every job trains the same run: full-batch steps (the whole 308-sample training split of `synthetic`
# in each step, one step per epoch), no dropout, SGD. Whatever order a sampler deals the samples in,
# 2 ranks x 154 samples average to the gradient of 1 process x 308, so a 2-node run must match the
# 1-process run (SGD keeps rounding differences at rounding level; Adam's normalisation blows them up
# where a gradient is close to zero). 150 epochs keep a job training for 5 s or more after its first
# checkpoint, when it gets interrupted. Without a monitored metric the checkpoint callback rewrites
# last.ckpt every epoch.
RUN = ["cluster=local", "data=synthetic", "data.batch_size=308", "model.dropout=0", "model.width=64",
       "optim=sgd", "trainer.max_epochs=150", "trainer.accelerator=cpu", "callbacks=each/checkpoints",
       "callbacks.checkpoints.monitor=null", "logger=none", "test=false",
       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
SWEEP_LRS = ["0.01", "0.003", "0.001"]


@dataclass
class Interruption:
    """What a background thread did to a running job, for the test to check afterwards."""

    command: list[str]
    damage_newest: bool = False  # while the job waits to restart, truncate its newest checkpoint
    sent: bool = False
    checkpoints_at_restart: list[str] = field(default_factory=list)
    newest_step_at_restart: int = 0  # the global step of the newest checkpoint the restart could take
    error: str | None = None


@dataclass
class Jobs:
    ddp: Job
    single: Job  # also the uninterrupted reference of the interrupted jobs
    usr1: dict[str, Job]  # by who gets the signal: the job's steps, or its batch shell
    requeued: Job
    damaged: Job
    interruptions: dict[str, Interruption]
    sweep: subprocess.Popen
    sweep_dir: Path


def interrupt(cluster: LocalCluster, job: Job, record: Interruption, timeout: float = 300) -> None:
    """Send `record.command` once the job has written its first checkpoint; then, while the job waits to
    start again, note the checkpoints it left behind."""
    deadline = time.monotonic() + timeout
    try:
        # With damage to do, two step checkpoints at least: one to damage, one to resume from.
        needed = 2 if record.damage_newest else 0
        while len(list((job.run_dir / "checkpoints").glob("step*.ckpt"))) < needed \
                or not (job.run_dir / "checkpoints" / "last.ckpt").is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job.id} wrote no checkpoint within {timeout:.0f}s")
            time.sleep(0.2)
        cluster.command(*record.command)
        record.sent = True
        while cluster.state(job.id) in ("RUNNING", "COMPLETING"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job.id} was not requeued")
            time.sleep(0.2)
        record.checkpoints_at_restart = sorted(p.name for p in (job.run_dir / "checkpoints").glob("*.ckpt"))
        record.newest_step_at_restart = read_checkpoint(job.run_dir / "checkpoints" / "last.ckpt")["global_step"]
        if record.damage_newest:
            newest = max((job.run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
            with open(newest, "r+b") as f:  # its other names (hard links) are the same file: damaged too
                f.truncate(f.seek(0, 2) // 2)
    except Exception as error:  # reported by the test that reads the record
        record.error = repr(error)


@pytest.fixture(scope="module")
def jobs(slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    work = tmp_path_factory.mktemp("slurm-jobs")

    def submit(*overrides: str) -> Job:
        return slurm_cluster.submit(*overrides, f"paths.log_dir={work / 'logs'}", cwd=work)

    # The interrupted jobs first: their restarts wait ~10 s, which the other jobs fill. Each one's watcher
    # starts as soon as it is queued: a job can finish while the next ones are still being submitted.
    interruptions: dict[str, Interruption] = {}
    threads: list[threading.Thread] = []

    def submit_interrupted(make_command: Callable[[str], list[str]], *overrides: str,
                           damage_newest: bool = False) -> Job:
        job = submit(*RUN, *overrides)
        interruptions[job.id] = Interruption(make_command(job.id), damage_newest=damage_newest)
        threads.append(threading.Thread(target=interrupt, args=(slurm_cluster, job, interruptions[job.id]),
                                        daemon=True))
        threads[-1].start()
        return job

    usr1 = {"steps": submit_interrupted(lambda id: ["scancel", "--signal=USR1", id], "logger=wandb", "name=usr1"),
            # Only the batch shell gets it; the script must pass it on to the ranks.
            "batch": submit_interrupted(lambda id: ["scancel", "--batch", "--signal=USR1", id], "name=usr1_batch")}
    requeued = submit_interrupted(lambda id: ["scontrol", "requeue", id], "name=requeue")
    damaged = submit_interrupted(lambda id: ["scontrol", "requeue", id],
                                 "callbacks.checkpoints.every_n_train_steps=5", "name=damaged", damage_newest=True)
    ddp = submit(*RUN, "trainer.num_nodes=2", "++trainer.strategy=ddp", "name=ddp")
    single = submit(*RUN, "name=single")
    # Last: each trial takes a whole node (2 ranks), which would hold the jobs above back.
    sweep_dir = work / "sweep"
    sweep = subprocess.Popen(
        python_module(
            # conf/hydra/launcher/slurm.yaml: submitit_slurm with one task per device, so that each trial
            # is itself a 2-rank DDP job
            "chainrule.cli.train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4",
            f"hydra.sweep.dir={sweep_dir}", f"optim.lr={','.join(SWEEP_LRS)}", "data=synthetic",
            "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.devices=2", "++trainer.strategy=ddp",
            "logger=csv", "callbacks=each/checkpoints", "test=false", "trainer.enable_progress_bar=false",
            "name=sweep",
        ),
        cwd=work, env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield Jobs(ddp, single, usr1, requeued, damaged, interruptions, sweep, sweep_dir)
    if sweep.poll() is None:
        sweep.kill()
    for job in (*usr1.values(), requeued, damaged, ddp, single):
        slurm_cluster.command("scancel", job.id, check=False)
    for thread in threads:
        thread.join(timeout=5)


def checkpoint_steps(names: list[str]) -> list[int]:
    """Global steps in checkpoint names such as epoch003-step000040.ckpt (callbacks.checkpoints)."""
    return [int(match.group(1)) for name in names if (match := re.search(r"step(\d+)", name))]


def final_step(job: Job) -> int:
    return read_checkpoint(job.run_dir / "checkpoints" / "last.ckpt")["global_step"]


def test_two_node_ddp_job_equals_one_process(jobs: Jobs, slurm_cluster: LocalCluster) -> None:
    assert slurm_cluster.wait(jobs.ddp) == ["COMPLETED"], jobs.ddp.log[-3000:]
    assert slurm_cluster.wait(jobs.single) == ["COMPLETED"], jobs.single.log[-3000:]
    assert "nodes n[1-2]" in jobs.ddp.log  # one rank on each node
    ddp = read_checkpoint(jobs.ddp.run_dir / "checkpoints" / "last.ckpt")
    single = read_checkpoint(jobs.single.run_dir / "checkpoints" / "last.ckpt")
    assert ddp["global_step"] == single["global_step"] == 150
    assert ddp["state_dict"].keys() == single["state_dict"].keys()
    for name, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("receiver", ["steps", "batch"])
def test_usr1_checkpoints_requeues_and_resumes_in_the_same_run(receiver: str, jobs: Jobs,
                                                               slurm_cluster: LocalCluster) -> None:
    job = jobs.usr1[receiver]
    record = jobs.interruptions[job.id]
    history = slurm_cluster.wait(job)
    assert record.error is None and record.sent, record.error
    assert history == ["REQUEUED", "COMPLETED"], job.log[-3000:]

    # Lightning saved its checkpoint on USR1 and requeued the job, which went on training until SLURM
    # stopped it, so a newer end-of-epoch checkpoint may hold even more progress: the restart takes the
    # newest.
    assert f"Requeued SLURM job: {job.id}" in job.log
    # The SIGTERM that SLURM then sends ends the first start with one line (W&B's service died with it).
    assert "stopped by SIGTERM" in job.log and "Traceback" not in job.log, job.log[-3000:]
    hpc_step = read_checkpoint(job.run_dir / "hpc_ckpt_1.ckpt")["global_step"]
    resumed = re.search(r"resuming from (\S+)", job.log)
    assert resumed, job.log[-3000:]
    resumed_step = hpc_step if resumed.group(1).endswith("hpc_ckpt_1.ckpt") else record.newest_step_at_restart
    slurm_cluster.wait(jobs.single)
    assert 0 < hpc_step <= resumed_step < final_step(jobs.single)
    assert final_step(job) == final_step(jobs.single)

    # Both starts used the one run directory, and logged to the one W&B run.
    starts = re.findall(r"chainrule: job \S+, start (\d+), nodes \S+", job.log)
    assert starts == ["1", "2"]
    assert [p.name for p in job.run_dir.parent.iterdir()] == [job.run_dir.name]
    if receiver == "batch":
        return  # this job logs no W&B run
    run_id = (job.run_dir / "wandb_run_id").read_text().strip()
    wandb_runs = offline_runs(job.run_dir)
    assert len(wandb_runs) == 2 and all(p.name.endswith(f"-{run_id}") for p in wandb_runs), wandb_runs


def test_scontrol_requeue_resumes_from_the_last_checkpoint(jobs: Jobs, slurm_cluster: LocalCluster) -> None:
    job, record = jobs.requeued, jobs.interruptions[jobs.requeued.id]
    history = slurm_cluster.wait(job)
    assert record.error is None and record.sent, record.error
    assert history == ["REQUEUED", "COMPLETED"], job.log[-3000:]

    assert not list(job.run_dir.glob("hpc_ckpt_*.ckpt"))  # no USR1: Lightning saved nothing itself
    resumed = re.search(r"resuming from (\S+)", job.log)
    assert resumed and Path(resumed.group(1)).parent == job.run_dir / "checkpoints", job.log[-3000:]
    # The checkpoints left when the job was requeued: the restart continued from step > 0.
    assert record.newest_step_at_restart > 0, record.checkpoints_at_restart
    slurm_cluster.wait(jobs.single)
    assert final_step(job) == final_step(jobs.single)


def test_a_requeued_job_whose_newest_checkpoint_is_damaged_resumes_from_the_one_before(
        jobs: Jobs, slurm_cluster: LocalCluster) -> None:
    job, record = jobs.damaged, jobs.interruptions[jobs.damaged.id]
    history = slurm_cluster.wait(job)
    assert record.error is None and record.sent, record.error
    assert history == ["REQUEUED", "COMPLETED"], job.log[-3000:]
    damaged = re.search(r"skipping damaged checkpoint (\S+)", job.log)
    resumed = re.search(r"resuming from (\S+)", job.log)
    assert damaged and resumed, job.log[-3000:]
    assert checkpoint_steps([Path(resumed.group(1)).name])[0] > 0  # the previous intact one, not step 0
    slurm_cluster.wait(jobs.single)
    assert final_step(job) == final_step(jobs.single)


def test_submitit_sweep_runs_three_ddp_trials_as_jobs(jobs: Jobs, slurm_cluster: LocalCluster) -> None:
    output, _ = jobs.sweep.communicate(timeout=400)
    assert jobs.sweep.returncode == 0, output[-3000:]
    trials = sorted(p for p in jobs.sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1", "2"]  # one run dir per trial: no rank re-ran the sweep
    lrs = set()
    for trial in trials:
        assert (trial / "checkpoints" / "last.ckpt").is_file(), trial
        overrides = (trial / ".hydra" / "overrides.yaml").read_text()
        lrs |= {lr for lr in SWEEP_LRS if f"optim.lr={lr}" in overrides}
    assert lrs == set(SWEEP_LRS)
    # submitit submits the trials as one job array and keeps a folder per task: <array job>_<task>
    tasks = [p for p in (jobs.sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    assert len(tasks) == 3, tasks
    for task in tasks:
        assert slurm_cluster.final_history(task.name)[-1] == "COMPLETED"
        logs = "".join(p.read_text() for p in task.glob("*_log.*"))
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs, task
