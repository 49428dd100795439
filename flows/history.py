"""`decflow history`: drift and churn over the last nights, as a table and a chart."""

import os
import tempfile
from pathlib import Path

import pandas as pd

from decflow import monitoring
from decflow.config import PipelineConfig


def history_command(config: PipelineConfig, days: int | None = None, out: Path | None = None
                    ) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Read the nights back from MLflow and write ``history.csv``, ``history.md`` and
    ``drift_history.png`` under ``out`` (default ``<home>/reports``), each replaced whole.

    Returns:
        The table (one row per night, oldest first) and the paths written.
    """
    days = days or config.monitoring.history_days
    mon = config.monitoring
    frame = monitoring.history(config.tracking_uri(), config.registry.experiment, days=days)
    out = Path(out) if out is not None else Path(config.home) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "history.csv", "markdown": out / "history.md",
             "chart": out / "drift_history.png"}
    fig = monitoring.plot_history(frame, max_churn=mon.max_churn,
                                  max_size_shift=mon.max_size_shift)
    writers = {"csv": lambda p: frame.to_csv(p, index=False),
               "markdown": lambda p: Path(p).write_text(monitoring.history_markdown(frame)),
               "chart": lambda p: fig.savefig(p, dpi=110, format="png")}
    for kind, path in paths.items():
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            writers[kind](tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return frame, paths
