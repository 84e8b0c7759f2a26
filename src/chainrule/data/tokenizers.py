"""Tokenizers that work offline, for `chainrule-prepare tokens`: bytes (built in, always there), and
tiktoken's or a Hugging Face `tokenizer.json` when their package and files are on this machine.

    bytes                   UTF-8 bytes: ids 0-255, end of text 256 (vocabulary 257)
    tiktoken:<encoding>     e.g. tiktoken:gpt2 (pip install tiktoken; its file cached in TIKTOKEN_CACHE_DIR)
    hf:<tokenizer.json>     a file saved by Hugging Face `tokenizers` (pip install tokenizers)
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chainrule.core.errors import ChainruleError, ConfigError

KINDS = ("bytes", "tiktoken:<encoding>", "hf:<tokenizer.json>")
# End-of-text tokens a Hugging Face tokenizer may have, by convention.
HF_END_OF_TEXT = ("<|endoftext|>", "</s>", "[SEP]", "<eos>")


@dataclass(frozen=True)
class Tokenizer:
    """`encode(raw bytes of one document)` -> token ids; `eot`: the id appended after each document (None:
    documents follow each other directly)."""

    name: str
    vocab_size: int
    eot: int | None
    encode: Callable[[bytes], np.ndarray]


def _bytes() -> Tokenizer:
    return Tokenizer("bytes", 257, 256, lambda data: np.frombuffer(data, dtype=np.uint8))


def _package(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ChainruleError(f"--tokenizer {spec} needs the '{name}' package, which is not installed: "
                             f"`pip install {name}`, or use --tokenizer bytes (built in)") from None


def _tiktoken(spec: str, encoding: str) -> Tokenizer:
    tiktoken = _package("tiktoken", spec)
    try:
        enc = tiktoken.get_encoding(encoding)
    except Exception as error:  # unknown name, or its file neither cached nor downloadable here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ChainruleError(f"--tokenizer {spec}: tiktoken cannot load encoding '{encoding}' ({reason}); "
                             f"its file must be in TIKTOKEN_CACHE_DIR on a machine without network, or "
                             f"use --tokenizer bytes") from None

    def encode(data: bytes) -> np.ndarray:
        return np.asarray(enc.encode_ordinary(data.decode("utf-8", errors="replace")), dtype=np.int64)

    return Tokenizer(spec, enc.n_vocab, enc.eot_token, encode)


def _hugging_face(spec: str, file: str) -> Tokenizer:
    tokenizers = _package("tokenizers", spec)
    if not Path(file).is_file():
        raise ChainruleError(f"--tokenizer {spec}: no file {file}; pass the tokenizer.json that Hugging Face "
                             f"`tokenizers` saved, or use --tokenizer bytes")
    try:
        tok = tokenizers.Tokenizer.from_file(file)
    except Exception as error:
        raise ChainruleError(f"--tokenizer {spec}: cannot read {file} as a Hugging Face tokenizer "
                             f"({error})") from None
    eot = next((tok.token_to_id(t) for t in HF_END_OF_TEXT if tok.token_to_id(t) is not None), None)

    def encode(data: bytes) -> np.ndarray:
        ids = tok.encode(data.decode("utf-8", errors="replace"), add_special_tokens=False).ids
        return np.asarray(ids, dtype=np.int64)

    return Tokenizer(spec, tok.get_vocab_size(), eot, encode)


def make_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer `spec` names (see the module's docstring); ChainruleError when it cannot load here."""
    kind, _, argument = spec.partition(":")
    if spec == "bytes":
        return _bytes()
    if kind == "tiktoken" and argument:
        return _tiktoken(spec, argument)
    if kind == "hf" and argument:
        return _hugging_face(spec, argument)
    raise ConfigError(f"unknown tokenizer '{spec}'; choose one of: {', '.join(KINDS)}")
