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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.slurm.conftest import Job, LocalCluster, checkpoint, python_module

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Full-batch steps (the whole 308-sample training split of `synthetic` in every step) and no dropout:
# whatever order a sampler deals the samples in, 2 ranks x 154 samples average to the gradient of
# 1 process x 308, so the parameters must agree. SGD keeps rounding differences at rounding level
# (Adam's normalisation blows them up wherever a gradient is close to zero).
EQUAL_RUN = ["cluster=local", "data=synthetic", "data.batch_size=308", "model.dropout=0", "optim=sgd",
             "trainer.max_steps=5", "trainer.accelerator=cpu", "callbacks=model_checkpoint",
             "callbacks.model_checkpoint.monitor=null", "logger=none", "test=false",
             "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# Long enough (400 steps in 40 epochs) to be interrupted after its first checkpoint. Without a
# monitored metric the checkpoint callback writes last.ckpt at every epoch.
RESUMABLE_RUN = ["cluster=local", "data=synthetic", "trainer.max_epochs=40", "trainer.accelerator=cpu",
                 "callbacks=model_checkpoint", "callbacks.model_checkpoint.monitor=null", "test=false",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
SWEEP_LRS = ["0.01", "0.003", "0.001"]


@dataclass
class Interruption:
    """What a background thread did to a running job, for the test to check afterwards."""

    command: list[str]
    sent: bool = False
    checkpoints_at_restart: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Jobs:
    ddp: Job
    single: Job
    usr1: dict[str, Job]  # by who gets the signal: the job's steps, or its batch shell
    requeued: Job
    reference: Job
    interruptions: dict[str, Interruption]
    sweep: subprocess.Popen
    sweep_dir: Path


def interrupt(cluster: LocalCluster, job: Job, record: Interruption, timeout: float = 300) -> None:
    """Send `record.command` once the job has written its first checkpoint; then, while the job waits to
    start again, note the checkpoints it left behind."""
    deadline = time.monotonic() + timeout
    try:
        while not (job.run_dir / "checkpoints" / "last.ckpt").is_file():
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
    except Exception as error:  # reported by the test that reads the record
        record.error = repr(error)


@pytest.fixture(scope="module")
def jobs(slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    work = tmp_path_factory.mktemp("slurm-jobs")

    def submit(*overrides: str) -> Job:
        return slurm_cluster.submit(*overrides, f"paths.log_dir={work / 'logs'}", cwd=work)

    # The interrupted jobs first: their restarts wait ~10 s, which the other jobs fill.
    usr1 = {"steps": submit(*RESUMABLE_RUN, "logger=wandb", "name=usr1"),
            "batch": submit(*RESUMABLE_RUN, "logger=wandb", "name=usr1_batch")}
    requeued = submit(*RESUMABLE_RUN, "name=requeue")
    interruptions = {
        usr1["steps"].id: Interruption(["scancel", "--signal=USR1", usr1["steps"].id]),
        # Only the batch shell gets it; the script must pass it on to the ranks.
        usr1["batch"].id: Interruption(["scancel", "--batch", "--signal=USR1", usr1["batch"].id]),
        requeued.id: Interruption(["scontrol", "requeue", requeued.id]),
    }
    threads = [threading.Thread(target=interrupt, args=(slurm_cluster, job, interruptions[job.id]), daemon=True)
               for job in (*usr1.values(), requeued)]
    for thread in threads:
        thread.start()
    sweep_dir = work / "sweep"
    sweep = subprocess.Popen(
        python_module(
            "chainrule.train", "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4",
            f"hydra.sweep.dir={sweep_dir}", f"optim.lr={','.join(SWEEP_LRS)}", "data=synthetic",
            "trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=csv", "callbacks=model_checkpoint",
            "trainer.enable_progress_bar=false", "name=sweep",
        ),
        cwd=work, env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    reference = submit(*RESUMABLE_RUN, "name=reference")
    ddp = submit(*EQUAL_RUN, "trainer.num_nodes=2", "++trainer.strategy=ddp", "name=ddp")
    single = submit(*EQUAL_RUN, "name=single")
    yield Jobs(ddp, single, usr1, requeued, reference, interruptions, sweep, sweep_dir)
    if sweep.poll() is None:
        sweep.kill()
    for job in (*usr1.values(), requeued, reference, ddp, single):
        slurm_cluster.command("scancel", job.id, check=False)
    for thread in threads:
        thread.join(timeout=5)


def final_step(job: Job) -> int:
    return checkpoint(job.run_dir / "checkpoints" / "last.ckpt")["global_step"]


def test_two_node_ddp_job_equals_one_process(jobs: Jobs, slurm_cluster: LocalCluster) -> None:
    assert slurm_cluster.wait(jobs.ddp) == ["COMPLETED"], jobs.ddp.log[-3000:]
    assert slurm_cluster.wait(jobs.single) == ["COMPLETED"], jobs.single.log[-3000:]
    assert "nodes n[1-2]" in jobs.ddp.log  # one rank on each node
    ddp = checkpoint(jobs.ddp.run_dir / "checkpoints" / "last.ckpt")
    single = checkpoint(jobs.single.run_dir / "checkpoints" / "last.ckpt")
    assert ddp["global_step"] == single["global_step"] == 5
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

    hpc = job.run_dir / "hpc_ckpt_1.ckpt"  # Lightning's checkpoint on USR1
    assert f"chainrule: resuming from {hpc}" in job.log
    assert f"Restored all states from the checkpoint at {hpc}" in job.log
    slurm_cluster.wait(jobs.reference)
    assert 0 < checkpoint(hpc)["global_step"] < final_step(jobs.reference)
    assert final_step(job) == final_step(jobs.reference)

    # Both starts used the one run directory, and logged to the one W&B run.
    starts = re.findall(r"chainrule: job \S+, start (\d+), nodes \S+, run dir (\S+)", job.log)
    assert starts == [("1", str(job.run_dir)), ("2", str(job.run_dir))]
    assert [p.name for p in job.run_dir.parent.iterdir()] == [job.run_dir.name]
    run_id = (job.run_dir / "wandb_run_id").read_text()
    wandb_runs = sorted((job.run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and all(p.name.endswith(f"-{run_id}") for p in wandb_runs), wandb_runs


def test_scontrol_requeue_resumes_from_the_last_checkpoint(jobs: Jobs, slurm_cluster: LocalCluster) -> None:
    job, record = jobs.requeued, jobs.interruptions[jobs.requeued.id]
    history = slurm_cluster.wait(job)
    assert record.error is None and record.sent, record.error
    assert history == ["REQUEUED", "COMPLETED"], job.log[-3000:]

    assert not list(job.run_dir.glob("hpc_ckpt_*.ckpt"))  # no USR1: Lightning saved nothing itself
    resumed = re.search(r"chainrule: resuming from (\S+)", job.log)
    assert resumed and Path(resumed.group(1)).parent == job.run_dir / "checkpoints", job.log[-3000:]
    assert f"Restored all states from the checkpoint at {resumed.group(1)}" in job.log
    # The checkpoints left when the job was requeued: the restart continued from step > 0.
    steps = [int(m.group(1)) for name in record.checkpoints_at_restart if (m := re.search(r"step(\d+)", name))]
    assert steps and max(steps) > 0, record.checkpoints_at_restart
    slurm_cluster.wait(jobs.reference)
    assert final_step(job) == final_step(jobs.reference)


def test_submitit_sweep_runs_three_trials_as_jobs(jobs: Jobs, slurm_cluster: LocalCluster) -> None:
    output, _ = jobs.sweep.communicate(timeout=300)
    assert jobs.sweep.returncode == 0, output[-3000:]
    trials = sorted(p for p in jobs.sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1", "2"]
    lrs = set()
    for trial in trials:
        assert (trial / "checkpoints" / "last.ckpt").is_file(), trial
        overrides = (trial / ".hydra" / "overrides.yaml").read_text()
        lrs |= {lr for lr in SWEEP_LRS if f"optim.lr={lr}" in overrides}
    assert lrs == set(SWEEP_LRS)
    # submitit submits the trials as one job array and keeps a folder per task: <array job>_<task>
    job_ids = [p.name for p in (jobs.sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    assert len(job_ids) == 3, job_ids
    assert all(slurm_cluster.history(job_id)[-1] == "COMPLETED" for job_id in job_ids)
