"""The layout of a sharded checkpoint, and how such a folder appears atomically under its name.

A sharded checkpoint (written by `trainer=fsdp`, chainrule.checkpointing.dcp) is a folder named like a
checkpoint file, `<name>.ckpt/`, holding:

    __<rank>_0.distcp   each rank's shards of the model and optimizer state (torch.distributed.checkpoint)
    .metadata           DCP's index of all shards, written once every rank has written its own
    meta.pt             the rest of the checkpoint: loop counters, callbacks, LR schedules, the run's config
    manifest.json       written last: the size of every other file

All ranks write into a hidden temporary folder (`.<name>.ckpt.<pid>.tmp`, removed by
chainrule.checkpointing.discovery.remove_stale_temporaries when a writer died); rank 0 then writes the
manifest and renames the folder into place. A folder under a checkpoint's name is therefore complete,
and `is_complete` also refuses one whose files no longer match its manifest (truncated, deleted).
Replacing an older folder of the same name (`last.ckpt`) swaps the two in one atomic rename where the file
system allows (Linux renameat2); elsewhere the old one is moved aside first, and a crash between the two
renames leaves the previous checkpoints of the run to resume from.
"""

import ctypes
import json
import os
import shutil
from pathlib import Path

META = "meta.pt"  # Lightning's name for it (lightning.fabric.utilities.load._METADATA_FILENAME)
MANIFEST = "manifest.json"
DCP_INDEX = ".metadata"
FORMAT = "chainrule-sharded-checkpoint"
TEMP_SUFFIX = ".tmp"  # the same suffix as chainrule.checkpointing.io's temporary files


def is_sharded(path: str | Path) -> bool:
    """Whether `path` is a sharded checkpoint folder (complete or not), rather than a file or a run
    directory."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in (MANIFEST, META, DCP_INDEX))


def temporary_name(target: Path, pid: int) -> Path:
    """Where a writer with process id `pid` assembles `target` before renaming it into place."""
    return target.with_name(f".{target.name}.{pid}{TEMP_SUFFIX}")


def write_manifest(folder: Path, world_size: int) -> None:
    """List every file of `folder` with its size; written last, durably: the folder is complete now."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": FORMAT, "version": 1, "world_size": world_size, "files": files}
    write_durably(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def read_manifest(path: str | Path) -> dict | None:
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def is_complete(path: str | Path) -> bool:
    """True when the folder has its manifest, the manifest names the DCP index and meta.pt, and every file
    it lists is present with the listed size."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None or not {META, DCP_INDEX} <= set(manifest.get("files", {})):
        return False
    for name, size in manifest["files"].items():
        try:
            if (path / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def write_durably(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file, fsync'ed, renamed into place."""
    temporary = path.with_name(f".{path.name}{TEMP_SUFFIX}")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; renames are still atomic
        pass
    finally:
        os.close(fd)


def commit(temporary: Path, target: Path) -> None:
    """Put the complete folder `temporary` in place as `target`, replacing what was there."""
    fsync_directory(temporary)
    if not os.path.lexists(target):
        os.rename(temporary, target)
    elif _exchange(temporary, target):
        remove(temporary)  # now the old checkpoint
    else:
        old = target.with_name(f".{target.name}.{os.getpid()}.old{TEMP_SUFFIX}")
        os.rename(target, old)
        os.rename(temporary, target)
        remove(old)
    fsync_directory(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic rename (Linux renameat2 RENAME_EXCHANGE); False where the system or
    the file system does not offer it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def link_folder(source: Path, target: Path) -> None:
    """`target` becomes a second name of the sharded checkpoint `source` (hard links to its files, copies
    where the file system has none), appearing atomically. It keeps `source`'s modification time, so that
    discovery sees the two as one save."""
    temporary = temporary_name(target, os.getpid())
    remove(temporary)
    temporary.mkdir()
    for file in source.iterdir():
        try:
            os.link(file, temporary / file.name)
        except OSError:
            shutil.copy2(file, temporary / file.name)
    commit(temporary, target)
    stat = source.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def remove(path: Path) -> None:
    """Delete a checkpoint file or folder (nothing if absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
