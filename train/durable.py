"""Durable writes: a file is either the old one or the whole new one, never torn, and it is
on disk before anyone is told about it. Used by training and by the observatory's store."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: Path):
    """A binary file to write `path` through: a temp file in the same directory, fsynced and
    moved over `path` with `os.replace` on success, removed on error. Readers see the old
    file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def remove_temp_files(directory: Path) -> None:
    """Temp files of atomic writes that a kill interrupted, in `directory` and its
    subdirectories one level down: never listed, never read."""
    for tmp in [*Path(directory).glob(".*.tmp-*"), *Path(directory).glob("*/.*.tmp-*")]:
        tmp.unlink(missing_ok=True)
