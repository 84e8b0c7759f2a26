"""`chainrule-prepare`: turn files on disk into the formats chainrule's data modules stream from.

    chainrule-prepare tokens TEXT... --output DIR      text files -> token files (data=token_file)
    chainrule-prepare tokens --stdlib --output DIR     ... from Python's standard library sources here
    chainrule-prepare shards IMAGES --output DIR|URL   an image folder -> LitData shards (data=streaming)

A tool of its own rather than a Hydra app: it writes data, not a run, so it has no run directory and no
config tree; its errors end as one `chainrule: error:` line like every chainrule command's.
"""

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

from chainrule.core import console
from chainrule.core.errors import ChainruleError, DataNotFoundError

# Folders of the standard library that hold installed packages, not the standard library.
NOT_STDLIB = {"site-packages", "dist-packages"}


def stdlib_sources() -> list[Path]:
    """The Python files of this interpreter's standard library: a corpus every machine has."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not NOT_STDLIB & set(p.relative_to(root).parts) and p.is_file())


def documents(inputs: list[str], pattern: str, stdlib: bool) -> list[Path]:
    """The files to tokenize: files named on the command line, the files matching `pattern` under the
    folders named there, and the standard library's sources with `stdlib`; sorted, each once."""
    found: list[Path] = stdlib_sources() if stdlib else []
    for name in inputs:
        path = Path(name)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob(pattern) if p.is_file())
        else:
            raise DataNotFoundError(f"{name}: no such file or folder")
    unique = sorted(set(found))
    if not unique:
        raise DataNotFoundError(
            f"no files to tokenize: none match --pattern '{pattern}' in {', '.join(inputs)}" if inputs
            else "no files to tokenize: name text files or folders, or pass --stdlib")
    return unique


def prepare_tokens(args: argparse.Namespace) -> None:
    from chainrule.data.token_format import write_token_files
    from chainrule.data.tokenizers import make_tokenizer

    files = documents(args.inputs, args.pattern, args.stdlib)
    tokenizer = make_tokenizer(args.tokenizer)
    started = time.monotonic()
    meta = write_token_files(files, tokenizer, Path(args.output), args.val_fraction, args.test_fraction,
                             args.seed)
    counts = ", ".join(f"{split} {c['tokens']:,} tokens ({c['documents']:,} files)"
                       for split, c in meta["splits"].items())
    console.say(f"wrote {args.output}: {counts}; vocabulary {meta['vocab_size']:,} ({meta['tokenizer']}, "
                f"{meta['dtype']}) in {time.monotonic() - started:.1f} s\n"
                f"train on it: chainrule-train experiment=stdlib_gpt data.data_dir={args.output}")


def prepare_shards(args: argparse.Namespace) -> None:
    from chainrule.data.image_folder import discover
    from chainrule.data.streaming import write_image_shards

    classes, splits = discover(Path(args.images), args.val_fraction, args.test_fraction, args.seed)
    started = time.monotonic()
    # LitData's own start method for its workers (spawn): uploads to object stores use threads.
    write_image_shards(splits, args.output, args.image_size, args.channels, args.chunk_bytes, args.workers,
                       start_method=None)
    counts = ", ".join(f"{split} {len(splits[split]):,}" for split in ("train", "val", "test")
                       if splits[split])
    console.say(f"wrote {args.output}: {counts} images of {len(classes)} classes, {args.channels}x"
                f"{args.image_size}x{args.image_size}, in {time.monotonic() - started:.1f} s\n"
                f"train on it: chainrule-train data=streaming data.input_dir={args.output} "
                f"data.num_classes={len(classes)} model=cnn")


class OneLineErrors(argparse.ArgumentParser):
    """A command line argparse refuses ends like any other chainrule error: one line, exit status 2."""

    def error(self, message: str) -> None:
        console.error_line(f"{message} (see {self.prog} --help)")
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    root = OneLineErrors(prog="chainrule-prepare", description=__doc__.split("\n\n")[0],
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="Details: docs/data.md.")
    commands = root.add_subparsers(dest="command", required=True)

    tokens = commands.add_parser("tokens", help="text files -> train.bin, val.bin, test.bin, meta.json")
    tokens.add_argument("inputs", nargs="*", help="text files, or folders searched for --pattern")
    tokens.add_argument("--stdlib", action="store_true",
                        help="also the standard library's .py files of this Python (no download)")
    tokens.add_argument("--output", required=True, help="folder for the token files")
    tokens.add_argument("--tokenizer", default="bytes",
                        help="bytes (built in), tiktoken:<encoding> or hf:<tokenizer.json> (default: bytes)")
    tokens.add_argument("--pattern", default="*.txt", help="files to take from folders (default: *.txt)")
    tokens.add_argument("--val-fraction", type=float, default=0.05,
                        help="of the text, whole files (default: 0.05)")
    tokens.add_argument("--test-fraction", type=float, default=0.05, help="(default: 0.05)")
    tokens.add_argument("--seed", type=int, default=0, help="for the files' order and split (default: 0)")
    tokens.set_defaults(run=prepare_tokens)

    shards = commands.add_parser("shards", help="an image folder -> LitData shards of train, val, test")
    shards.add_argument("images", help="class folders, or train/, val/, test/ folders of them")
    shards.add_argument("--output", required=True, help="folder or object-store URL (s3://...)")
    shards.add_argument("--image-size", type=int, default=64, help="resized and center-cropped (default: 64)")
    shards.add_argument("--channels", type=int, choices=[1, 3], default=3,
                        help="3: RGB, 1: grayscale (default: 3)")
    shards.add_argument("--val-fraction", type=float, default=0.1,
                        help="for a split without a folder (default: 0.1)")
    shards.add_argument("--test-fraction", type=float, default=0.1, help="(default: 0.1)")
    shards.add_argument("--seed", type=int, default=0, help="for the fractions' split (default: 0)")
    shards.add_argument("--chunk-bytes", default="64MB", help="size of a shard (default: 64MB)")
    shards.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes decoding images (default: up to 4)")
    shards.set_defaults(run=prepare_shards)
    return root


def _check(args: argparse.Namespace) -> None:
    for name in ("val_fraction", "test_fraction"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise ChainruleError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    if args.val_fraction + args.test_fraction >= 1.0:
        raise ChainruleError("--val-fraction + --test-fraction must leave training data")


def cli(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        _check(args)
        with console.plain_console():
            console.quiet_libraries()
            args.run(args)
    except ChainruleError as error:
        console.error_line(str(error))
        sys.exit(2)


if __name__ == "__main__":
    cli()
