"""data=token_file: memory-mapped token files, random training windows drawn per (seed, epoch, sample),
consecutive evaluation windows; and the files chainrule-prepare writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from chainrule.core.errors import ConfigError, DataNotFoundError
from chainrule.data.draws import SeededSampler
from chainrule.data.sampling import GlobalBatchSampler
from chainrule.data.token_format import assign_splits, write_token_files
from chainrule.data.tokenizers import make_tokenizer
from tests.support.configs import compose_config
from tests.support.data_files import write_tokens
from tests.support.processes import run_cli


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("tokens") / "files")


def datamodule(data_dir: Path, *overrides: str):
    cfg = compose_config("data=token_file", f"data.data_dir={data_dir}", "data.seq_len=16", *overrides)
    return instantiate(cfg.data)


def test_the_files_hold_every_document_once_with_an_end_of_text_token_each(tokens: Path) -> None:
    meta = json.loads((tokens / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 257 and meta["eot"] == 256
    counts = meta["splits"]
    assert sum(c["documents"] for c in counts.values()) == 12 and all(c["documents"] for c in counts.values())
    for split, c in counts.items():
        ids = np.fromfile(tokens / f"{split}.bin", dtype=np.uint16)
        assert len(ids) == c["tokens"] and (ids == 256).sum() == c["documents"] and ids[-1] == 256
    text = bytes(np.fromfile(tokens / "train.bin", dtype=np.uint16)[:40].astype(np.uint8)).decode()
    assert text.split()[0] in {"def", "return", "self", "import", "class", "value", "for", "in", "range",
                               "print"}


def test_documents_go_to_splits_by_their_share_of_the_bytes() -> None:
    splits = assign_splits([100] * 20, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert splits.count("val") == 2 and splits.count("test") == 4 and splits.count("train") == 14
    assert assign_splits([100] * 20, 0.1, 0.2, seed=0) == splits
    assert assign_splits([100] * 20, 0.1, 0.2, seed=1) != splits


def test_a_training_window_is_the_file_at_an_offset_drawn_from_its_seed(tokens: Path) -> None:
    train = datamodule(tokens).split_dataset("train")
    ids = np.fromfile(tokens / "train.bin", dtype=np.uint16).astype(np.int64)
    assert len(train) == (len(ids) - 1) // 16  # an epoch: as many windows as fit side by side
    x, y = train[(5, 123_456_789)]
    start = 123_456_789 % (len(ids) - 16)
    assert torch.equal(x, torch.from_numpy(ids[start:start + 16])) and torch.equal(y[:-1], x[1:])
    assert x.dtype == torch.int64 and y[-1] == ids[start + 16]


def test_every_rank_takes_the_windows_one_process_takes_at_each_step(tokens: Path) -> None:
    train = datamodule(tokens).split_dataset("train")

    def steps(world: int) -> list[list[torch.Tensor]]:
        per_rank = []
        for rank in range(world):
            sampler = SeededSampler(GlobalBatchSampler(len(train), 8, world, rank, seed=12345), seed=12345)
            sampler.set_epoch(1)
            keys = list(sampler)
            share = 8 // world  # each rank's part of a global batch of 8
            per_rank.append([keys[s * share:(s + 1) * share] for s in range(len(keys) // share)])
        return [[train[key][0] for rank in per_rank for key in rank[s]] for s in range(len(per_rank[0]))]

    single, ddp = steps(1), steps(2)
    assert len(single) == len(ddp) > 3
    for one, two in zip(single, ddp):
        assert torch.equal(torch.stack(sorted(one, key=torch.Tensor.tolist)),
                           torch.stack(sorted(two, key=torch.Tensor.tolist)))


def test_evaluation_windows_are_fixed_spread_over_the_file_and_capped(tokens: Path) -> None:
    dm = datamodule(tokens, "data.eval_windows=3")
    val = dm.split_dataset("val")
    ids = np.fromfile(tokens / "val.bin", dtype=np.uint16).astype(np.int64)
    stride = (len(ids) - 1) // 3
    assert len(val) == 3 and stride > 16
    for i in range(3):
        assert torch.equal(val[i][0], torch.from_numpy(ids[i * stride:i * stride + 16]))
    everything = datamodule(tokens, "data.eval_windows=null").split_dataset("val")
    assert len(everything) == (len(ids) - 1) // 16
    assert torch.equal(torch.cat([everything[i][0] for i in range(len(everything))]),
                       torch.from_numpy(ids[:16 * len(everything)]))  # side by side: all of the file
    assert dm.input_shape == (16,) and dm.num_classes == dm.num_outputs == 257


def test_missing_token_files_name_the_command_that_writes_them(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"no token files in .*chainrule-prepare tokens"):
        _ = datamodule(tmp_path).num_classes


def test_a_window_longer_than_the_training_file_is_refused(tokens: Path) -> None:
    with pytest.raises(ConfigError, match=r"not more than data.seq_len=100000"):
        datamodule(tokens, "data.seq_len=100000").split_dataset("train")


def test_one_big_document_is_split_by_its_tokens(tmp_path: Path) -> None:
    text = tmp_path / "one.txt"
    text.write_bytes(bytes(range(32, 127)) * 100)  # 9,500 bytes
    meta = write_token_files([text], make_tokenizer("bytes"), tmp_path / "out", 0.1, 0.05, seed=0)
    counts = {split: c["tokens"] for split, c in meta["splits"].items()}
    assert counts == {"train": 9501 - 950 - 475, "val": 950, "test": 475}
    ids = np.concatenate([np.fromfile(tmp_path / "out" / f"{split}.bin", dtype=np.uint16)
                          for split in ("train", "test", "val")])
    assert bytes(ids[:-1].astype(np.uint8)) == text.read_bytes() and ids[-1] == 256


@pytest.mark.slow
def test_training_on_missing_token_files_ends_in_one_line(tmp_path: Path) -> None:
    result = run_cli("chainrule-train", "experiment=stdlib_gpt", "data.data_dir=nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "chainrule: error: no token files in nowhere (meta.json is missing): write them with "
        "`chainrule-prepare tokens <text files or folders> --output nowhere`, or point data.data_dir at a "
        "folder holding train.bin, val.bin and meta.json"]
