"""Real `chainrule-train` runs on file-based data the test writes: 2 gloo ranks against one process, and a
run killed with SIGKILL mid-epoch and resumed against an uninterrupted one, with loader workers.

- image_folder and token_file: 2 ranks end with the parameters of one process (global-batch order, and
  augmentation / windows drawn per sample from (seed, epoch, index), whatever the rank or worker).
- streaming (LitData): 2 ranks train on exactly the samples one process trains on in each epoch, each
  once; the order differs, as LitData documents (chainrule.data.streaming).
- image_folder and streaming with data.num_workers=2: the resumed run is bit-for-bit the uninterrupted one.
"""

import signal
from pathlib import Path

import pytest

from tests.support.checkpoints import assert_same_parameters
from tests.support.data_files import write_images, write_shards, write_tokens
from tests.support.interruptions import output, pause_at, start, wait_until
from tests.support.presets import DDP_RUN_STEPS, QUIET_CONSOLE
from tests.support.processes import run_cli
from tests.support.seen_samples import read_seen
from tests.training.conftest import assert_same_result, resume

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# 8 optimizer steps of plain SGD (momentum), no dropout and no BatchNorm (tests.support.presets.DDP_RUN), a
# checkpoint every 2 steps; 2 loader workers per process unless a run says otherwise.
COMMON = ("optim=sgd", f"trainer.max_steps={DDP_RUN_STEPS}", "trainer.deterministic=true",
          "trainer.log_every_n_steps=1", "logger=csv", "test=false", "data.num_workers=2",
          "callbacks.checkpoints.every_n_train_steps=2", *QUIET_CONSOLE)
STREAMING_STEPS = 16  # two epochs of 64 samples in global batches of 8


def runs(root: Path) -> dict[str, tuple[str, ...]]:
    return {
        # 36 images -> 24 for training: 3 steps per epoch, so 8 steps cross two reshuffles.
        "image_folder": ("data=image_folder", f"data.data_dir={root}/images", "data.image_size=16",
                         "data.batch_size=8", "data.val_fraction=0.17", "data.test_fraction=0.17",
                         "model=mlp", "model.width=32", "model.dropout=0"),
        # 4 steps per epoch of random windows.
        "token_file": ("experiment=stdlib_gpt", f"data.data_dir={root}/tokens", "data.seq_len=16",
                       "data.samples_per_epoch=32", "data.eval_windows=8", "data.batch_size=8",
                       "model.n_layer=1", "model.n_head=2", "model.n_embd=32"),
        "streaming": ("data=streaming", f"data.input_dir={root}/shards", "data.num_classes=3",
                      "data.batch_size=8", "model=mlp", "model.width=32", "model.dropout=0",
                      f"trainer.max_steps={STREAMING_STEPS}",
                      "+callbacks.seen._target_=tests.support.seen_samples.SeenSamples"),
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("files")
    write_images(root / "images", per_class=12)
    write_tokens(root / "tokens")
    write_shards(root / "shards", {"train": 64, "val": 16}, items_per_chunk=8)
    return root


def train(root: Path, data: str, run_dir: Path, *overrides: str) -> Path:
    extra = [f"+callbacks.seen.folder={run_dir}/seen"] if data == "streaming" else []
    result = run_cli("chainrule-train", *COMMON, *runs(root)[data], *extra, *overrides,
                     f"hydra.run.dir={run_dir}", cwd=run_dir.parent, merge_stderr=True, timeout=400)
    assert result.returncode == 0, result.stdout[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def single(root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted single-process run per data module: the reference of both kinds of test."""
    folder = tmp_path_factory.mktemp("single")
    return {data: train(root, data, folder / data, "trainer=cpu") for data in runs(root)}


@pytest.mark.multiprocess
@pytest.mark.parametrize("data", ["image_folder", "token_file"])
def test_two_ranks_end_with_the_parameters_of_one_process(root: Path, single: dict[str, Path], data: str,
                                                           tmp_path: Path) -> None:
    """With one loader worker per rank (the single process had two): neither matters."""
    ddp = train(root, data, tmp_path / "ddp", "trainer=ddp_cpu", "trainer.devices=2", "data.num_workers=1")
    assert_same_parameters(ddp / "checkpoints" / "last.ckpt", single[data] / "checkpoints" / "last.ckpt")


@pytest.mark.multiprocess
def test_two_ranks_stream_each_epoch_the_samples_one_process_streams(root: Path, single: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    ddp = train(root, "streaming", tmp_path / "ddp", "trainer=ddp_cpu", "trainer.devices=2")
    one, two = read_seen(single["streaming"] / "seen"), read_seen(ddp / "seen")
    assert sorted(one) == sorted(two) == [0, 1]
    for epoch in (0, 1):
        assert sorted(i for batch in one[epoch] for i in batch) == list(range(64))  # each sample once
        assert sorted(i for batch in two[epoch] for i in batch) == list(range(64))
        assert len(two[epoch]) == 2 * len(one[epoch]) == 16  # each rank: half of every global batch
    assert one[0] != one[1]  # reshuffled between epochs


@pytest.mark.parametrize("data", ["image_folder", "streaming"])
def test_sigkill_mid_epoch_then_resume_with_workers_is_bitwise_identical(root: Path, single: dict[str, Path],
                                                                         data: str, tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    preset = [*COMMON, *runs(root)[data], "trainer=cpu"]
    if data == "streaming":
        preset.append(f"+callbacks.seen.folder={run_dir}/seen")
    process = start(run_dir, *pause_at(5, "train_batch_start", marker), preset=preset)
    wait_until(marker.exists, process, run_dir)
    process.kill()  # SIGKILL: no handler runs; the workers die with their parent's pipes
    assert process.wait(timeout=60) == -signal.SIGKILL

    resumed = resume(run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:] + output(run_dir)[-2000:]
    assert "step000004.ckpt" in resumed.stdout + resumed.stderr  # mid-epoch, from the step-4 checkpoint
    assert_same_result(run_dir, single[data] / "checkpoints" / "last.ckpt")
