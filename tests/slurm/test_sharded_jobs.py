"""chainrule-submit trainer=fsdp_cpu on the local two-node cluster (slurm/local/): one FSDP rank on each
node, started by srun, is one run (one run directory named by the job, one W&B run, rank 0's log) and
trains what one process trains (tests.support.presets.SHARDED_RUN), its checkpoint a folder written by
both nodes."""


import pytest

from chainrule.checkpointing.sharded import read_manifest
from tests.slurm.conftest import Job, LocalCluster
from tests.support.metrics import read_metric
from tests.support.presets import SHARDED_RUN, SHARDED_RUN_STEPS
from tests.support.sharded import model_errors
from tests.support.wandb_runs import offline_runs

pytestmark = [pytest.mark.slurm, pytest.mark.multiprocess, pytest.mark.slow]

RUN = ["cluster=local", *(o for o in SHARDED_RUN if not o.startswith("logger=")), "logger=default"]


@pytest.fixture(scope="module")
def jobs(slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    """The two-node FSDP job and its one-process reference, submitted together (they fit side by side)."""
    work = tmp_path_factory.mktemp("slurm-sharded")
    submitted = {
        "fsdp": slurm_cluster.submit(*RUN, "trainer=fsdp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
                                     "name=fsdp", f"paths.log_dir={work / 'logs'}", cwd=work),
        "single": slurm_cluster.submit(*RUN, "trainer=cpu", "name=single", f"paths.log_dir={work / 'logs'}",
                                       cwd=work),
    }
    for job in submitted.values():
        assert slurm_cluster.wait(job) == ["COMPLETED"], job.log[-3000:]
    return submitted


def test_a_two_node_fsdp_job_trains_what_one_process_trains(jobs: dict[str, Job]) -> None:
    fsdp, single = jobs["fsdp"], jobs["single"]
    assert "nodes n[1-2]" in fsdp.log  # one rank on each node
    last = fsdp.run_dir / "checkpoints" / "last.ckpt"
    assert read_manifest(last)["world_size"] == 2  # shards from both nodes, one folder
    errors = model_errors(last, single.run_dir / "checkpoints" / "last.ckpt")
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-6, f"{worst} differs by {errors[worst]:.3g} relative"
    # Gradient norms of the whole gradient, not of one node's shards.
    assert read_metric(fsdp.run_dir, "grad_norm/global_pre_clip") == pytest.approx(
        read_metric(single.run_dir, "grad_norm/global_pre_clip"), rel=1e-5)
    assert len(read_metric(fsdp.run_dir, "train/loss_step")) == SHARDED_RUN_STEPS


def test_a_two_node_fsdp_job_is_one_run(jobs: dict[str, Job]) -> None:
    fsdp = jobs["fsdp"]
    assert [p.name for p in fsdp.run_dir.parent.iterdir()] == [f"slurm-{fsdp.id}"]
    log = (fsdp.run_dir / "train.log").read_text()
    assert "GLOBAL_RANK: 0" in log and "GLOBAL_RANK: 1" not in log
    run_id = (fsdp.run_dir / "wandb_run_id").read_text().strip()
    wandb_runs = offline_runs(fsdp.run_dir)
    assert len(wandb_runs) == 1 and wandb_runs[0].name.endswith(f"-{run_id}"), wandb_runs
    assert "training state per rank:" in fsdp.log and "(sharded over 2 ranks)" in fsdp.log


