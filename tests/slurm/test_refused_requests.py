"""Resource requests that cannot run as asked are refused by chainrule-submit before anything is queued."""

from pathlib import Path

import pytest

from tests.slurm.conftest import LocalCluster, python_module

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

GOOD = ["cluster=local", "trainer.accelerator=cpu", "data=synthetic"]

# (case, overrides added to GOOD, words the one-line error must contain)
REFUSED = [
    ("devices_unknown", ["trainer.devices=auto"], ["trainer.devices='auto'", "one task per device"]),
    ("tasks_mismatch", ["trainer.devices=2", "cluster.sbatch=['--ntasks-per-node=4']"],
     ["--ntasks-per-node=4", "trainer.devices"]),
    ("nodes_mismatch", ["trainer.num_nodes=2", "cluster.sbatch=['--nodes=1']"],
     ["--nodes=1", "trainer.num_nodes"]),
    ("gpus_on_cpu_trainer", ["cluster.gpus_per_node=2"], ["gpus_per_node=2", "trainer.accelerator=cpu"]),
    ("gpus_not_devices", ["trainer.accelerator=gpu", "trainer.devices=4", "cluster.gpus_per_node=8"],
     ["gpus_per_node=8", "trainer.devices=4"]),
    ("batch_not_divisible", ["data.batch_size=30", "trainer.num_nodes=2", "trainer.devices=2"],
     ["data.batch_size=30", "world size 4"]),
    ("batch_with_accumulation",
     ["data.batch_size=32", "trainer.num_nodes=2", "trainer.accumulate_grad_batches=3"],
     ["data.batch_size=32", "accumulate_grad_batches=3"]),
    ("unknown_partition", ["cluster.partition=gpu"], ["partition", "'gpu'", "debug"]),
    ("more_nodes_than_partition", ["trainer.num_nodes=3", "data.batch_size=30"],
     ["num_nodes=3", "has 2 nodes"]),
    ("more_cpus_than_node", ["trainer.devices=2", "cluster.cpus_per_task=2"], ["4 CPUs", "have 2"]),
    ("gpus_on_cpu_partition", ["trainer.accelerator=gpu", "trainer.devices=2", "data.batch_size=32"],
     ["2 GPUs", "have 0"]),
    ("grace_beyond_time", ["cluster.time=00:01:00", "cluster.signal_grace=120"],
     ["signal_grace=120", "time"]),
    ("spawning_strategy", ["trainer.devices=2", "++trainer.strategy=ddp_spawn"],
     ["ddp_spawn", "strategy=ddp"]),
    ("sweep", ["optim.lr=0.1,0.01"], ["sweep", "hydra/launcher=slurm"]),
    ("container_without_image", ["cluster.container.runtime=apptainer"], ["cluster.container.image"]),
]


@pytest.mark.parametrize(("case", "overrides", "words"), REFUSED, ids=[case for case, _, _ in REFUSED])
def test_bad_request_is_refused_before_submission(case: str, overrides: list[str], words: list[str],
                                                  slurm_cluster: LocalCluster, tmp_path: Path) -> None:
    name = f"refused_{case}"
    result = slurm_cluster.run(*python_module("chainrule.slurm.submit", *GOOD, *overrides, f"name={name}",
                                              f"paths.log_dir={tmp_path / 'logs'}"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert slurm_cluster.jobs_named(name) == ""
    assert not (tmp_path / "logs").exists()


def test_good_request_dry_run_queues_nothing(slurm_cluster: LocalCluster, tmp_path: Path) -> None:
    result = slurm_cluster.run(*python_module("chainrule.slurm.submit", "--dry-run", *GOOD, "name=dry_run",
                                              f"paths.log_dir={tmp_path / 'logs'}"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#!/bin/bash") and "#SBATCH --partition=debug" in result.stdout
    assert slurm_cluster.jobs_named("dry_run") == ""
