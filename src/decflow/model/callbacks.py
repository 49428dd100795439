"""Training callbacks: progress output, metric streaming and early stopping attach here."""

import logging
from typing import Any


class Callback:
    """Base class; override the hooks you need. ``phase`` is "pretrain" or "finetune".

    ``logs`` of ``on_epoch_end`` for "pretrain" holds ``loss``; for "finetune" (called at
    each target update) it holds ``kl``, ``reconstruction``, ``delta_label`` and ``step``.
    """

    def on_phase_begin(self, phase: str, info: dict[str, Any]) -> None:
        """Called once before a phase starts."""

    def on_epoch_end(self, phase: str, epoch: int, logs: dict[str, float]) -> None:
        """Called after each pretraining epoch or fine-tuning target update."""

    def on_phase_end(self, phase: str, logs: dict[str, Any]) -> None:
        """Called once after a phase ends."""


class LogProgress(Callback):
    """Logs training progress to the ``decflow.model.training`` logger: the start and end of
    each phase, about ``lines`` evenly spaced pretraining epochs and every fine-tuning target
    update.

    Unlike ``ProgressBar`` it needs no terminal, so it is what scheduled runs show (the Prefect
    flows forward ``decflow.*`` records to the run's logs).
    """

    def __init__(self, lines: int = 10, logger: logging.Logger | None = None):
        self.lines = lines
        self.logger = logger or logging.getLogger("decflow.model.training")
        self._every = 1

    def on_phase_begin(self, phase, info):
        if phase == "pretrain":
            epochs = int(info.get("epochs") or 1)
            self._every = max(1, epochs // max(1, self.lines))
            self.logger.info("pretraining: %d epochs", epochs)
        else:
            self.logger.info("fine-tuning: at most %s steps", info.get("max_iter"))

    def on_epoch_end(self, phase, epoch, logs):
        values = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "update")
        if phase == "finetune":
            self.logger.info("fine-tuning update %d: %s", epoch, values)
        elif epoch == 1 or epoch % self._every == 0:
            self.logger.info("pretraining epoch %d: %s", epoch, values)

    def on_phase_end(self, phase, logs):
        values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in logs.items())
        self.logger.info("%s done: %s", "pretraining" if phase == "pretrain" else "fine-tuning",
                         values)


class ProgressBar(Callback):
    """A rich progress bar per phase (pretraining epochs; fine-tuning steps up to max_iter)."""

    def __init__(self):
        self._progress = None
        self._task = None

    def on_phase_begin(self, phase, info):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        total = info.get("epochs") if phase == "pretrain" else info.get("max_iter")
        self._progress = Progress(TextColumn(f"[bold]{phase:<9}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                  TimeElapsedColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(phase, total=total, info="")

    def on_epoch_end(self, phase, epoch, logs):
        if self._progress is None:
            return
        info = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "step")
        if phase == "pretrain":
            self._progress.update(self._task, completed=epoch, info=info)
        else:
            self._progress.update(self._task, completed=logs.get("step", 0), info=info)

    def on_phase_end(self, phase, logs):
        if self._progress is not None:
            if phase == "finetune":  # converged early: show where it stopped
                self._progress.update(self._task, total=logs.get("n_iter"),
                                      completed=logs.get("n_iter"))
            self._progress.stop()
            self._progress = None


def dispatch(callbacks, hook: str, *args) -> None:
    """Call ``hook`` on every callback that has it."""
    for cb in callbacks or ():
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)
