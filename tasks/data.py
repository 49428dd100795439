"""Load and validate source data."""

import datetime as dt
import json

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from decflow.config import PipelineConfig, SourceConfig
from decflow.data import storage
from decflow.data import validation
from decflow.data.storage import Lineage, WindowScan
from decflow.data.validation import ValidationReport
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.errors import DataError
from decflow.redaction import redact

from .runtime import redact_errors, retry_on_io
from .tracking import log_dict


@task(name="scan_window", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io,
      cache_policy=NO_CACHE)
@redact_errors
def scan_window(source: SourceConfig, run_date: dt.date, window_days: int | None = None,
                min_days: int | None = None) -> WindowScan:
    """Describe the training window (or one partition) ending at run_date from file footers;
    that date must exist, and at least ``min_days`` days of the window. No rows are read."""
    scan = storage.scan_window(source, run_date, window_days)
    if window_days is None:
        storage.check_window_days(scan, min_days)
    day = f"{source.date_column}={run_date.isoformat()}"
    if run_date.isoformat() in scan.lineage.missing_partitions:
        raise DataError(f"source partition {day} is missing in {redact(source.uri)} "
                        f"(partitions found in the window: {scan.lineage.partitions or 'none'})")
    files = scan.partition(run_date).files
    if not sum(f.n_rows for f in files):
        # the window's min_rows does not protect the night itself: an empty night would
        # replace its labels with none (or train, then fail at write-back)
        raise DataError(f"source partition {day} has no rows ({len(files)} Parquet files, 0 "
                        f"rows) in {redact(source.uri)}: nothing to label; the labels of "
                        f"{day} are kept")
    return scan


@task(name="snapshot_partition", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_io, cache_policy=NO_CACHE)
@redact_errors
def snapshot_partition(window: WindowScan, run_date: dt.date) -> tuple[WindowScan, list[str]]:
    """The run date's files exactly as the window validated them, and the names of files that
    landed there since (not labelled: they were not validated; a backfill labels them later).

    Raises:
        DataError: a validated file changed or disappeared since (its rows cannot be labelled
            as validated).
    """
    snapshot = window.partition(run_date)
    now = storage.scan_window(SourceConfig(uri=window.source_uri,
                                           date_column=window.date_column), run_date, 1)
    current = {f.path: f for f in now.files}
    changed = [f.name for f in snapshot.files
               if f.path not in current or current[f.path].fingerprint != f.fingerprint]
    if changed:
        raise DataError(f"source files changed after validation, before labelling: {changed}; "
                        f"nothing was labelled: rerun the night")
    known = {f.path for f in snapshot.files}
    late = [f.name for f in now.files if f.path not in known]
    if late:
        get_run_logger().warning("files landed in %s=%s after validation and are not labelled "
                                 "(a backfill labels them): %s", window.date_column,
                                 run_date.isoformat(), late)
    return snapshot, late


@task(name="validate_features", cache_policy=NO_CACHE)
@redact_errors
def validate_features(scan: WindowScan, config: PipelineConfig, run_id: str | None = None,
                      key: str = "validation") -> ValidationReport:
    """Run the expectation suite on every row, chunk by chunk on Dask; keep the result (MLflow +
    Prefect artifact); fail on errors."""
    with dask_client(config.compute) as client:
        report = scoring.validate_scan(client, scan, config)
    publish_validation(report, config, run_id, key)
    return validation.check(report)


def publish_validation(report: ValidationReport, config: PipelineConfig, run_id: str | None,
                       key: str = "validation") -> None:
    create_markdown_artifact(key=key, markdown=report.to_markdown(),
                             description="Great Expectations result")
    if run_id is not None:
        log_dict(config, run_id, report.to_dict(), "validation/result.json")


def lineage_tags(lineage: Lineage) -> dict[str, str]:
    return {"data.source_uri": lineage.source_uri,
            "data.partitions": json.dumps(lineage.partitions),
            "data.missing_partitions": json.dumps(lineage.missing_partitions),
            "data.n_rows": str(lineage.n_rows), "data.digest": lineage.digest}
