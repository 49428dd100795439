"""Progress of long work, for whoever listens: the command line's bar on a terminal, nothing
otherwise (the default). The library says how much there is and how much is done; how it is
shown is the listener's business.

    with progress.listening(listener):          # the CLI, around a command
        job = progress.begin("validate", 120_000, "rows")
        job.advance(50_000)                     # as chunks finish
        job.end()

A listener is ``listener(what, total, unit)`` returning an object with ``advance(n)`` and
``end()``. One process, one listener; work started in other threads reports to it as well.
"""

import contextlib
from collections.abc import Callable


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass

    def end(self) -> None:
        pass


_SILENT = _Silent()
_listener: list[Callable] = []


@contextlib.contextmanager
def listening(listener: Callable):
    """Send every ``begin`` to ``listener`` while the block runs."""
    _listener.append(listener)
    try:
        yield
    finally:
        _listener.remove(listener)


def begin(what: str, total: int, unit: str):
    """A job of ``total`` ``unit`` (rows, partitions, k); its ``advance(n)`` and ``end()`` go
    to the listener, or nowhere."""
    if not _listener:
        return _SILENT
    try:
        return _listener[-1](what, total, unit)
    except Exception:  # noqa: BLE001 - showing progress is never why work fails
        return _SILENT
