"""The sbatch script chainrule-submit renders, checked without a cluster: golden files, bash syntax, and
the pieces it relies on (time limits, array specs, picking the checkpoint to resume from).

Golden files live in tests/slurm/golden/; after an intended change to the script, regenerate them with
`CHAINRULE_UPDATE_GOLDEN=1 pytest tests/slurm/test_job_script.py` and review the diff.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainrule.core.errors import ConfigError
from chainrule.launch.run_id import pinned_run_id
from chainrule.slurm.job import array_indices, parse_time
from chainrule.slurm.submit import main

GOLDEN = Path(__file__).parent / "golden"
# A 4-node x 8-GPU data-parallel job on a typical site: account, QOS, node features, modules.
FOUR_NODES_EIGHT_GPUS = [
    "experiment=mnist_cnn", "trainer=gpu", "trainer.devices=8", "trainer.num_nodes=4", "data.batch_size=512",
    "cluster.partition=gpu", "cluster.account=ml-team", "cluster.qos=high", "cluster.constraint=a100",
    "cluster.time=2-00:00:00", "cluster.cpus_per_task=8", "cluster.mem=480G",
    "cluster.setup=[module load cuda/12.4]", "paths.log_dir=/scratch/chainrule/logs",
]


def dry_run(*overrides: str, workdir: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture) -> str:
    """`chainrule-submit --dry-run` run in `workdir`, with this machine's paths replaced by placeholders."""
    monkeypatch.chdir(workdir)
    assert main(["--dry-run", *overrides]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.replace(sys.executable, "<python>").replace(str(workdir), "<workdir>")


def matches_golden(text: str, name: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CHAINRULE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"dry-run output differs from {path}"


def test_dry_run_four_nodes_eight_gpus_matches_golden(tmp_path: Path, monkeypatch, capsys) -> None:
    script = dry_run(*FOUR_NODES_EIGHT_GPUS, workdir=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    matches_golden(script, "four_nodes_eight_gpus.sbatch")


@pytest.mark.parametrize("runtime", ["apptainer", "pyxis"])
def test_dry_run_in_container_matches_golden(runtime: str, tmp_path: Path, monkeypatch, capsys) -> None:
    image = {"apptainer": "/shared/images/chainrule-0.1.0.sif",
             "pyxis": "'ghcr.io#chainrule/chainrule:0.1.0'"}[runtime]
    script = dry_run(*FOUR_NODES_EIGHT_GPUS, f"cluster.container.runtime={runtime}",
                     f"cluster.container.image={image}", "cluster.container.mounts=[/datasets]",
                     workdir=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert "<python>" not in script  # inside the image, its own chainrule runs
    matches_golden(script, f"four_nodes_eight_gpus_{runtime}.sbatch")


@pytest.mark.parametrize("extra", [
    [],
    ["cluster.container.runtime=apptainer", "cluster.container.image=x.sif"],
    ["cluster.container.runtime=pyxis", "cluster.container.image=x.sqsh"],
    ["cluster.array=0-3%2"],
], ids=["host", "apptainer", "pyxis", "array"])
def test_rendered_script_is_valid_bash(extra: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    script = dry_run(*FOUR_NODES_EIGHT_GPUS, *extra, workdir=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_array_job_writes_each_task_into_its_own_run_dir(tmp_path: Path, monkeypatch, capsys) -> None:
    script = dry_run("trainer=cpu", "cluster.array=0-3%2", "paths.log_dir=/logs", workdir=tmp_path,
                     monkeypatch=monkeypatch, capsys=capsys)
    assert "#SBATCH --array=0-3%2" in script
    assert "#SBATCH --output=/logs/train/runs/slurm-%A_%a/slurm.out" in script
    # Each task's ranks name their run directory as SLURM names the log's (%A_%a): the same folder.
    task_env = {"SLURM_JOB_ID": "107", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_JOB_NAME": "train"}
    assert pinned_run_id(task_env) == "slurm-100_3"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 5400), ("30:00", 1800), ("04:00:00", 14400), ("2-00:00:00", 172800), ("1-12", 129600),
    ("1-00:30", 88200), ("INFINITE", None), ("UNLIMITED", None),
])
def test_slurm_time_limits_parse(text: str, seconds: int | None) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["1h", "04:00:00:00", "", "-1"])
def test_bad_time_limit_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="cluster.time"):
        parse_time(text)


@pytest.mark.parametrize(("spec", "indices"), [
    ("0-3", [0, 1, 2, 3]), ("1,3,5", [1, 3, 5]), ("0-15:4", [0, 4, 8, 12]), ("0-9%2", list(range(10))),
    ("0,4-5", [0, 4, 5]),
])
def test_array_specs_expand_to_task_ids(spec: str, indices: list[int]) -> None:
    assert array_indices(spec) == indices
