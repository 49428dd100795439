"""The progress a command shows on a terminal: one line per job the library reports
(``decflow.progress``): what, how much of how much, the rate and the time left. Nothing when
standard error is not a terminal (a log file, a service's journal, a pipe) or under
``decflow --quiet``."""

import sys

from rich.progress import (BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "")
        return Text("" if speed is None else f"{speed:,.0f} {unit}/s")


class TerminalBars:
    """A ``decflow.progress`` listener drawing rich bars on standard error."""

    def __init__(self) -> None:
        from rich.console import Console

        self._progress = Progress(
            TextColumn("[bold]{task.description:<9}"), BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
            _Rate(), TextColumn("left"), TimeRemainingColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False)
        self._started = False

    def __call__(self, what: str, total: int, unit: str):
        if not self._started:
            self._progress.start()
            self._started = True
        task = self._progress.add_task(what, total=max(total, 1), unit=unit)
        progress = self._progress

        class Job:
            def advance(self, n: int = 1) -> None:
                progress.advance(task, n)

            def end(self) -> None:
                progress.update(task, completed=progress.tasks[task].total)
                progress.stop_task(task)

        return Job()

    def close(self) -> None:
        if self._started:
            self._progress.stop()


def wanted(quiet: bool) -> bool:
    """Bars only for a person watching: standard error is a terminal and not ``--quiet``."""
    try:
        return not quiet and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
