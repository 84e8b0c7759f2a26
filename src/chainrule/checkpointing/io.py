"""Reading and writing checkpoint files: atomic writes, safe (weights-only) loading, integrity, and the
run config a checkpoint carries."""

import io
import os
import pickle
import re
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from chainrule.checkpointing import sharded
from chainrule.core.errors import CheckpointError

CONFIG_KEY = "chainrule_config"
TEMP_SUFFIX = ".tmp"

# Types besides tensors and plain containers that chainrule itself puts into checkpoints and that
# `weights_only=True` loading must therefore accept. chainrule stores state as plain dicts, lists and
# tensors, so this stays empty; a new entry must be a plain data type whose unpickling runs no code.
SAFE_GLOBALS: list[Any] = []


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader/writer, made crash-proof, safe, and off training's critical path.

    Writing: the checkpoint goes to a hidden temporary file next to its target, is flushed and fsync'ed,
    then renamed over the target (`os.replace` is atomic on POSIX). A process killed mid-write leaves at
    most a stray temporary file, never a partial file under a checkpoint's name.

    in_background: training waits only for a copy of the state in host memory (on the caller's thread, so
    it is the state of that step); one writer thread serializes and writes it while training goes on, in
    the order of the saves. Work that needs a written file (hard links, removals: `after_writes`) runs on
    that thread after it; reading a checkpoint, and the end of fitting, wait for every write first; a
    failed write is raised at the next save or at the end of fitting. It costs one extra copy of the
    state in host memory while a write is under way. Lightning's AsyncCheckpointIO would do the same
    with the copy left on the GPU and without an ordered place for the work after a write.

    Reading: `torch.load(weights_only=True)`, whatever Lightning asks for, unless a caller passes
    `weights_only=False` explicitly: a checkpoint is a pickle, and a pickle from anyone can run code.

    write_delay_s: for tests only; spreads each write over this many seconds (in chunks), so that a test
    can kill the process while a checkpoint is being written. 0 in real runs.
    """

    def __init__(self, write_delay_s: float, in_background: bool):
        super().__init__()
        self.write_delay_s = write_delay_s
        self.in_background = in_background
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            self.wait()
            return super().save_checkpoint(checkpoint, path, storage_options)
        if self.in_background:
            checkpoint = apply_to_collection(checkpoint, torch.Tensor, _host_copy)
        self.after_writes(partial(self._write_atomically, checkpoint, Path(path)))

    def _write_atomically(self, checkpoint: dict[str, Any], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
        try:
            with open(temp, "wb") as f:
                self._write(f, buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)

    def _write(self, f: io.BufferedWriter, data: memoryview) -> None:
        if self.write_delay_s <= 0:
            f.write(data)
            return
        chunks = 20
        step = max(1, -(-len(data) // chunks))
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            time.sleep(self.write_delay_s / chunks)

    # --- the background writer -------------------------------------------------------------------------
    def after_writes(self, work: Callable[[], None]) -> None:
        """Run `work` once every checkpoint saved so far is written: now, or on the writer thread."""
        if not self.in_background:
            return work()
        self._raise_failed_writes(wait=False)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chainrule-checkpoint-writer")
        self._pending.append(self._writer.submit(work))

    def wait(self) -> None:
        """Block until every checkpoint saved so far is written; raise the first write that failed."""
        self._raise_failed_writes(wait=True)

    def _raise_failed_writes(self, wait: bool) -> None:
        finished = [f for f in self._pending if wait or f.done()]
        self._pending = [f for f in self._pending if f not in finished]
        for future in finished:
            future.result()

    def teardown(self) -> None:
        """The end of fitting (also after an exception or a signal): the last checkpoints are on disk."""
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def remove_checkpoint(self, path: str | Path) -> None:
        self.wait()
        super().remove_checkpoint(path)

    def load_checkpoint(
        self, path: str | Path, map_location: Callable | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        self.wait()  # e.g. Lightning's LR finder reads back the checkpoint it has just saved
        if weights_only is False or "://" in str(path):
            return super().load_checkpoint(path, weights_only=weights_only)
        return load_checkpoint(path)


def after_checkpoint_writes(checkpoint_io: CheckpointIO | None, work: Callable[[], None]) -> None:
    """Run `work` (which needs the files just saved) once they are written, whatever writer the trainer has."""
    if isinstance(checkpoint_io, AtomicCheckpointIO):
        checkpoint_io.after_writes(work)
    else:
        work()


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of `tensor` in host memory that the next optimizer step cannot change."""
    return tensor.detach().to("cpu", copy=True)


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable: it lives in the directory entry."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint as plain tensors and containers (`weights_only=True`: no code runs on load)."""
    path = Path(path)
    if sharded.is_sharded(path):
        raise CheckpointError(
            f"{path} is a sharded checkpoint (a folder written by several ranks under trainer=fsdp); load it "
            f"with the same kind of trainer (trainer=fsdp or fsdp_cpu, any number of devices), or make one "
            f"file of it: chainrule-consolidate ckpt_path={path}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}; pass the path of a .ckpt file, "
            f"e.g. ckpt_path=<run dir>/checkpoints/last.ckpt, or resume=<run dir>"
        )
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated, foreign or unsafe files
        text = str(error).strip()
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in text:
            raise CheckpointError(
                f"refusing to load checkpoint {path}: it contains Python objects that would run code when "
                f"unpickled ({_unsafe_global(text)}); chainrule loads only tensors and plain containers. "
                f"Use checkpoints written by chainrule-train, or re-save this one as a state dict"
            ) from error
        first_line = text.splitlines()[0] if text else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from error


def _unsafe_global(message: str) -> str:
    """The offending global named in torch's weights-only error, e.g. `posix.system`."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return found.group(1) if found else "an unsupported global"


def is_intact(path: str | Path) -> bool:
    """True when `path` is a complete checkpoint archive: its zip directory is present (a truncated file
    has none) and every member matches its CRC-32 (a corrupted one does not). A sharded checkpoint (a
    folder) is intact when its files match its manifest (chainrule.checkpointing.sharded) and its meta.pt
    is an intact archive."""
    if Path(path).is_dir():
        return sharded.is_complete(path) and is_intact(Path(path) / sharded.META)
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None and any(n.endswith("/data.pkl") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def load_run_config(path: str | Path) -> dict[str, Any]:
    """The resolved config of the run that wrote the checkpoint at `path` (a file, or a sharded checkpoint's
    folder)."""
    checkpoint = load_checkpoint(Path(path) / sharded.META if sharded.is_sharded(path) else path)
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(f"{path} holds no chainrule config; it was not written by chainrule-train")
    return checkpoint[CONFIG_KEY]

