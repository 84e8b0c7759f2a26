"""`chainrule-prepare`: text files (the bundled corpus: Python's standard library here) into token files
that experiment=stdlib_gpt trains on, an image folder into LitData shards that data=streaming trains on,
and one-line errors for what cannot be done here.

Run as `python -m chainrule.cli.prepare` (the console script `chainrule-prepare` runs the same function)."""

import json
import re
import sys
from pathlib import Path

import pytest

from chainrule.cli.prepare import stdlib_sources
from tests.support.data_files import write_images
from tests.support.metrics import read_metric
from tests.support.presets import QUIET_CONSOLE
from tests.support.processes import run_cli

PREPARE = (sys.executable, "-m", "chainrule.cli.prepare")


def prepare(*args: str, cwd: Path):
    return run_cli(*PREPARE, *args, cwd=cwd)


@pytest.mark.slow
def test_the_stdlib_corpus_becomes_token_files_a_gpt_learns(tmp_path: Path) -> None:
    """The bundled corpus, whole; the experiment at tiny size (the full one: benchmarks/RESULTS.md)."""
    result = prepare("tokens", "--stdlib", "--output", "data/stdlib", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "data" / "stdlib" / "meta.json").read_text())
    files = stdlib_sources()
    assert sum(split["documents"] for split in meta["splits"].values()) == len(files) > 500
    assert meta["splits"]["train"]["tokens"] > 10 * meta["splits"]["val"]["tokens"] > 0
    assert "wrote data/stdlib: train" in result.stdout

    run_dir = tmp_path / "run"
    trained = run_cli("chainrule-train", "experiment=stdlib_gpt", "model.n_layer=1", "model.n_head=2",
                      "model.n_embd=32", "data.seq_len=32", "data.batch_size=16",
                      "data.samples_per_epoch=640", "data.eval_windows=64", "trainer.max_epochs=2",
                      "logger=csv", "test=false", *QUIET_CONSOLE, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    losses = read_metric(run_dir, "val/loss")
    assert len(losses) == 2 and losses[-1] < 3.5 < 5.55  # from ln(257) = 5.55 nats per byte at the start


@pytest.mark.slow
def test_an_image_folder_becomes_shards_that_stream_to_training(tmp_path: Path) -> None:
    write_images(tmp_path / "images", per_class=8)
    result = prepare("shards", "images", "--output", "shards", "--image-size", "12", "--workers", "1",
                     "--val-fraction", "0.25", "--test-fraction", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote shards: train 18, val 6 images of 3 classes, 3x12x12" in result.stdout
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["train", "val"]

    run_dir = tmp_path / "run"
    trained = run_cli("chainrule-train", "data=streaming", "data.input_dir=shards", "data.num_classes=3",
                      "data.batch_size=6", "data.num_workers=1", "model=cnn", "trainer.max_epochs=2",
                      "logger=csv", "test=false", *QUIET_CONSOLE, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert len(read_metric(run_dir, "val/loss")) == 2
    assert "data: streaming (18 train / 6 val / 0 test samples, global batch 6, input 3x12x12, 3 classes)" \
        in trained.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("tokens", "nowhere", "--output", "out"), "nowhere: no such file or folder"),
    (("tokens", ".", "--pattern", "*.nothing", "--output", "out"),
     "no files to tokenize: none match --pattern"),
    (("tokens", "--stdlib", "--tokenizer", "sentencepiece", "--output", "out"),
     "unknown tokenizer 'sentencepiece'; choose one of: bytes, tiktoken:<encoding>, hf:<tokenizer.json>"),
    (("tokens", "--stdlib", "--tokenizer", "hf:missing/tokenizer.json", "--output", "out"),
     "needs the 'tokenizers' package|no file missing/tokenizer.json"),
    (("tokens", "--stdlib", "--val-fraction", "0.6", "--test-fraction", "0.5", "--output", "out"),
     "--val-fraction \\+ --test-fraction must leave training data"),
    (("shards", "nowhere", "--output", "out"), "no image folder at nowhere"),
    (("tokens", "--stdlib"),
     "the following arguments are required: --output \\(see chainrule-prepare tokens --help\\)"),
], ids=["missing-input", "no-match", "unknown-tokenizer", "hf-missing", "fractions", "no-images",
        "no-output"])
def test_what_cannot_be_done_ends_in_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = prepare(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out" / "meta.json").exists()


def test_a_tiktoken_encoding_that_is_not_here_ends_in_one_line(tmp_path: Path) -> None:
    """Without the package, or without network and its cached file: either way one line, exit 2."""
    result = prepare("tokens", "--stdlib", "--tokenizer", "tiktoken:gpt2", "--output", "out", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    if result.returncode == 0:
        pytest.skip("tiktoken and its gpt2 file are on this machine")
    assert result.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("chainrule: error: --tokenizer tiktoken:gpt2 ")
