"""Training callbacks: progress output, metric streaming and early stopping attach here."""

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


class PrintProgress(Callback):
    """Prints one line every ``every`` epochs/updates (for scripts and notebooks)."""

    def __init__(self, every: int = 10):
        self.every = every

    def on_epoch_end(self, phase, epoch, logs):
        if epoch % self.every == 0:
            values = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
            print(f"[{phase}] {epoch}: {values}", flush=True)


def dispatch(callbacks, hook: str, *args) -> None:
    """Call ``hook`` on every callback that has it."""
    for cb in callbacks or ():
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)
