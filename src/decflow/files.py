"""Local files written whole or not at all: the one durability rule of every file decflow
writes on a local disk (models, encoders, reports, history tables, sweep results, Parquet
partitions).

The rule: write to a hidden temporary name in the same folder (readers skip names starting
with "."), fsync it, rename it over the final name, fsync the folder. A reader sees the old file
or the new one, never part of one; after a crash or power loss the final name holds one of the
two complete files, and a leftover temporary is only a hidden file. On an error the temporary is
removed and the old file stays. New files get the usual permissions (umask applies).
"""

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def temporary_beside(path: str | os.PathLike) -> Path:
    """A hidden, unique name in ``path``'s folder for writing ``path`` (``.<name>.<hex>.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def replace_durably(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync the written file ``tmp``, rename it over ``path``, fsync the folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write(tmp)``: ``tmp`` becomes ``p`` when the block ends
    without an error (``replace_durably``); otherwise it is removed and ``p`` is unchanged.
    The folder is made if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        yield tmp
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` by the rule above; returns ``path``."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)
