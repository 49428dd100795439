"""Advisory file locks that keep two runs of one pipeline from interleaving.

A lock is a file under ``<home>/locks``, held with ``flock`` for as long as the ``with`` block
runs; the kernel releases it when the holder exits, however it dies (``kill -9`` included), so
no stale lock needs clearing. The file records who holds it (pid, host, command, since), for the
message of whoever is refused.

Scope: processes that share ``home`` (one machine, or a shared file system with working
``flock``). Runs on different machines with different homes are kept apart by the deployment's
concurrency limit (the nightly), and registry moves by their compare-and-set check.
"""

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from decflow.errors import Conflict

_POLL_S = 0.2


def lock_path(home: str | Path, name: str) -> Path:
    """``<home>/locks/<name>.lock``; ``name`` keeps only ``[A-Za-z0-9._-]`` (others become _)."""
    return Path(home) / "locks" / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".lock")


def night(date_column: str, day: str) -> tuple[str, str]:
    """The lock of one night's labels (``day`` as YYYY-MM-DD): its name and, for the refusal,
    what it protects."""
    return f"labels-{date_column}={day}", f"a run writing the labels of {day}"


def _refused(what: str, path: Path, waited: str = "") -> Conflict:
    """The refusal of a held lock, naming its holder."""
    return Conflict(f"{what} is in progress elsewhere{waited}: {path} is held by "
                    f"{_holder(path)}; nothing was done, retry when it is finished")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"({info.get('command')})")


@contextlib.contextmanager
def hold(home: str | Path, name: str, what: str, *, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the lock ``name`` of ``home`` for the block.

    Args:
        what: what the lock protects, for the refusal message ("the nightly run for 2026-11-21").
        wait_s: how long to wait for a holder to finish; 0 refuses at once, unless the lock is
            free again within one poll (0.2 s): ``refuse_if_held`` holds it for an instant.

    Raises:
        Conflict: the lock is still held after ``wait_s`` (the message names the holder).
    """
    path = lock_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(wait_s, _POLL_S)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _refused(what, path, f" after waiting {wait_s:g} s" if wait_s > 0
                                   else "") from None
                time.sleep(_POLL_S)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:3]])[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # the next reader finds no stale holder
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def refuse_if_held(home: str | Path, name: str, what: str) -> None:
    """Raise ``Conflict`` (the message of ``hold``) when the lock ``name`` of ``home`` is held
    now; take nothing. A command checks before it starts what it needs (a Dask cluster), so a
    refused run is refused at once; the run still takes the lock with ``hold`` when it starts,
    and one that wins the lock in between is refused there."""
    path = lock_path(home, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # never held
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refused(what, path) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
