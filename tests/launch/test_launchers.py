"""DDP started by external launchers, where every rank runs the same command and composes its own
config: torchrun across two "nodes" on this machine, and a plain launcher that starts each rank with
the variables srun gives it. Each run equals a single process, lands in one run directory named by the
launcher's job id, and only rank 0 writes into it."""

import re
from pathlib import Path

import pytest

from tests.support.checkpoints import assert_same_parameters, files_in
from tests.support.presets import DDP_RUN
from tests.support.processes import finish, free_port, start

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

CPP_LOG = re.compile(r"\[[WIEF]\d{4} ")


def assert_one_run_like_single_process(runs: Path, name: str, single_process_run: Path) -> None:
    """`runs` holds one run directory, `name`, with the files and parameters of the single-process run.
    Both ranks ran Hydra in that directory; only rank 0's log records are in its log file."""
    (run_dir,) = runs.iterdir()
    assert run_dir.name == name
    assert files_in(run_dir) == files_in(single_process_run)
    log = (run_dir / "train.log").read_text()
    assert "GLOBAL_RANK: 0" in log and "GLOBAL_RANK: 1" not in log
    assert_same_parameters(run_dir / "checkpoints" / "last.ckpt",
                           single_process_run / "checkpoints" / "last.ckpt")


def test_two_nodes_under_torchrun_equal_single_process(tmp_path: Path, single_process_run: Path) -> None:
    port = free_port()
    agents = [
        start("torchrun", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=twonodes", "--max-restarts=0",
              "-m", "chainrule.cli.train", *DDP_RUN, "trainer=ddp_cpu", "trainer.devices=1",
              "trainer.num_nodes=2", f"paths.log_dir={tmp_path}/logs", "name=torchrun", cwd=tmp_path)
        for _ in range(2)
    ]
    outputs = finish(agents)
    assert [agent.returncode for agent in agents] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    # Both nodes resolved the same run directory from the rendezvous id, and only rank 0 wrote to it.
    assert_one_run_like_single_process(tmp_path / "logs" / "torchrun" / "runs", "torchrun-twonodes",
                                       single_process_run)
    output = "".join(outputs)
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in output
    assert "[rank 1] Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output


def test_ranks_started_like_srun_equal_single_process(tmp_path: Path, single_process_run: Path) -> None:
    """Lightning derives the rendezvous port from the job id's last 4 digits + 15000, as under srun."""
    job_id = f"7{free_port(15000, 24999) - 15000:04d}"
    slurm = {"SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "ddp-test", "SLURM_NTASKS": "2", "SLURM_NNODES": "1",
             "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODELIST": "127.0.0.1", "SLURM_NODEID": "0"}
    ranks = [
        start("chainrule-train", *DDP_RUN, "trainer=ddp_cpu", "trainer.devices=2",
              f"paths.log_dir={tmp_path}/logs", "name=srun",
              cwd=tmp_path, env={**slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)})
        for rank in range(2)
    ]
    outputs = finish(ranks)
    assert [rank.returncode for rank in ranks] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    assert_one_run_like_single_process(tmp_path / "logs" / "srun" / "runs", f"slurm-{job_id}",
                                       single_process_run)
    # Every line rank 1 printed from Python carries its rank; C++ log lines ("[W1127 12:00:00...") do not.
    rank_1_lines = [line for line in outputs[1].splitlines() if line.strip() and not CPP_LOG.match(line)]
    assert rank_1_lines and all(line.startswith("[rank 1] ") for line in rank_1_lines)
