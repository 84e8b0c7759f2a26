"""Sharded training (trainer=fsdp_cpu: FSDP2 and tensor parallelism on real gloo ranks) is the training one
process does: after 8 steps of tests.support.presets.SHARDED_RUN every parameter is within 1e-6 of a
single process's, on a 2x1 mesh (FSDP over 2 ranks) and a 1x2 mesh (tensor parallelism over 2 ranks);
gradient clipping and the gradient-norm scalars see the norm of the whole gradient; the run directory is
the one a single process writes."""

import re

import pytest

from chainrule.checkpointing.sharded import read_manifest
from tests.support.metrics import read_metric
from tests.support.presets import SHARDED_RUN, SHARDED_RUN_STEPS
from tests.support.processes import ONE_THREAD, finish, start
from tests.support.sharded import model_errors, whole

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

MESHES = {"2x1": "0", "1x2": "1"}  # data-parallel x tensor-parallel ranks: the multirun's job


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The single process and a multirun of the two meshes, side by side."""
    root = tmp_path_factory.mktemp("sharded")
    single = start("chainrule-train", *SHARDED_RUN, "trainer=cpu", f"hydra.run.dir={root}/single", cwd=root,
                   env=ONE_THREAD)
    meshes = start("chainrule-train", "-m", *SHARDED_RUN, "trainer=fsdp_cpu",
                   "trainer.strategy.tensor_parallel_size=1,2", f"hydra.sweep.dir={root}/fsdp", cwd=root,
                   env=ONE_THREAD)
    outputs = finish([single, meshes], timeout=400)
    assert [single.returncode, meshes.returncode] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    return {"single": root / "single", "output": dict(zip(("single", "fsdp"), outputs)),
            **{mesh: root / "fsdp" / job for mesh, job in MESHES.items()}}


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_parameters_equal_one_process_s(runs: dict, mesh: str) -> None:
    run_dir = runs[mesh]
    tensor = 2 if mesh == "1x2" else 1
    assert f"tensor_parallel_size: {tensor}" in (run_dir / ".hydra" / "config.yaml").read_text()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_dir() and read_manifest(last)["world_size"] == 2  # written by both ranks, shard by shard
    sharded, single = whole(last), whole(runs["single"] / "checkpoints" / "last.ckpt")
    assert sharded["global_step"] == single["global_step"] == SHARDED_RUN_STEPS
    errors = model_errors(last, runs["single"] / "checkpoints" / "last.ckpt")
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-6, f"{worst} differs by {errors[worst]:.3g} relative"
    momenta = [s["momentum_buffer"] for s in sharded["optimizer_states"][0]["state"].values()]
    assert momenta and all(m.abs().sum() > 0 for m in momenta)  # it trained, and its optimizer state is whole


@pytest.mark.parametrize("mesh", MESHES)
def test_clipping_and_gradient_norms_see_the_whole_gradient(runs: dict, mesh: str) -> None:
    """Per-layer and global norms before clipping as one process measures them (not one shard's), and
    after clipping at trainer.gradient_clip_val=0.05, which acts at every step."""
    single, sharded = runs["single"], runs[mesh]
    for metric in ("grad_norm/global_pre_clip", "grad_norm/blocks.0.attn.q", "grad_norm/blocks.1.mlp.2",
                   "grad_norm/token_embedding", "param_norm/blocks.0.attn.proj", "update_ratio/blocks.1.mlp.0"):
        values = read_metric(sharded, metric)
        assert len(values) == SHARDED_RUN_STEPS, metric
        assert values == pytest.approx(read_metric(single, metric), rel=1e-5), metric
    assert min(read_metric(single, "grad_norm/global_pre_clip")) > 0.5
    clipped = read_metric(sharded, "grad_norm/global_post_clip")
    assert clipped == pytest.approx([0.05] * SHARDED_RUN_STEPS, rel=1e-4)


def test_a_sharded_run_writes_the_run_directory_of_one_process(runs: dict) -> None:
    single = runs["single"]
    for mesh in MESHES:
        run_dir = runs[mesh]
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
            sorted(p.name for p in (single / "checkpoints").iterdir())
        assert len(read_metric(run_dir, "val/loss")) == len(read_metric(single, "val/loss"))
        assert read_metric(run_dir, "test/loss") == pytest.approx(read_metric(single, "test/loss"), rel=1e-5)
        log = (run_dir / "train.log").read_text()
        assert "GLOBAL_RANK: 0" in log and "GLOBAL_RANK: 1" not in log


def test_each_rank_holds_about_half_of_the_state_under_fsdp(runs: dict) -> None:
    """The start-up line of chainrule.callbacks.state_memory: parameters, gradients and optimizer state of
    the largest rank, whole in one process, halved by FSDP over 2 ranks (the multirun's first job)."""
    pattern = r"training state per rank: parameters ([\d.]+) KiB, gradients ([\d.]+) KiB, optimizer ([\d.]+) KiB"
    single = [float(v) for v in re.search(pattern, runs["output"]["single"]).groups()]
    line = re.search(pattern + r" \(sharded over 2 ranks\)", runs["output"]["fsdp"])
    assert line, runs["output"]["fsdp"][-3000:]
    for whole_size, shard in zip(single, (float(v) for v in line.groups())):
        assert shard == pytest.approx(whole_size / 2, rel=0.1)
