"""`decflow report`: the HTML page of a nightly run, as a file or as an artifact of the run.

Plain functions (no Prefect here): the CLI calls ``report_command``; the nightly flow calls
``log_report`` at its end.
"""

import datetime as dt
from pathlib import Path

from decflow import report
from decflow.config import PipelineConfig
from decflow.tracking import mlflow_client

REPORT_ARTIFACT = "report/report.html"


def report_path(config: PipelineConfig, run_date: str) -> Path:
    """Where a run's report goes by default: ``<home>/reports/recluster-<run date>.html``."""
    return Path(config.home) / "reports" / f"recluster-{run_date}.html"


def report_command(config: PipelineConfig, run_date: dt.date | None = None,
                   run_id: str | None = None, out: Path | None = None) -> Path:
    """Write the report of a recluster run (by id, by run date, else the newest); returns
    the file written."""
    uri, experiment = config.tracking_uri(), config.registry.experiment
    run = report.find_run(uri, experiment, run_date=run_date, run_id=run_id)
    day = run.data.tags.get("decflow.run_date") or run.info.run_id
    return report.write_report(uri, experiment, out or report_path(config, day),
                               run_id=run.info.run_id)


def log_report(config: PipelineConfig, run_id: str, out: Path | None = None) -> str:
    """Render the report of ``run_id`` once and log it into that run as
    ``report/report.html`` (and, with ``out``, write the same page there atomically); returns
    the artifact's URI."""
    client = mlflow_client(config.tracking_uri())
    page = report.render_report(config.tracking_uri(), run_id)
    client.log_text(run_id, page, REPORT_ARTIFACT)
    if out is not None:
        report.save_page(page, out)
    return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{REPORT_ARTIFACT}"
