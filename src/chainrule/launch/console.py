"""Rank-prefixed console output: every line a rank other than 0 prints starts with `[rank N] `."""

import logging
import sys
from typing import Any, TextIO


class RankPrefixedStream:
    """A text stream that starts every line with `prefix` (e.g. `[rank 1] `) and passes the rest on."""

    def __init__(self, stream: TextIO, prefix: str):
        self._stream = stream
        self._prefix = prefix
        self._at_line_start = True

    def write(self, text: str) -> int:
        if not text:
            return 0
        pieces = []
        for line in text.splitlines(keepends=True):
            if self._at_line_start:
                pieces.append(self._prefix)
            pieces.append(line)
            self._at_line_start = line.endswith(("\n", "\r"))
        self._stream.write("".join(pieces))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def prefix_console(rank: int) -> None:
    """Prefix this process's console output (print, warnings, logging, tracebacks) with its rank.

    Rank 0 stays unprefixed: it is the output users read. Output written by C++ code straight to the file
    descriptors (e.g. gloo warnings) is not prefixed.
    """
    if rank == 0 or isinstance(sys.stdout, RankPrefixedStream):
        return
    prefix = f"[rank {rank}] "
    replaced = {}
    for name in ("stdout", "stderr"):
        original = getattr(sys, name)
        replaced[id(original)] = RankPrefixedStream(original, prefix)
        setattr(sys, name, replaced[id(original)])
    # Handlers created before this call (Lightning adds one at import) hold the original streams.
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in replaced:
                handler.setStream(replaced[id(handler.stream)])


def flush_console() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass

