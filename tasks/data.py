"""Load and validate source data."""

import datetime as dt
import json

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from decflow import scoring, storage, validation
from decflow.compute import dask_client
from decflow.config import PipelineConfig, SourceConfig
from decflow.storage import Lineage, WindowScan
from decflow.validation import ValidationReport

from .tracking import log_dict


@task(name="scan_window", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def scan_window(source: SourceConfig, run_date: dt.date, window_days: int | None = None
                ) -> WindowScan:
    """Describe the training window (or one partition) ending at run_date from file footers;
    that date must exist. No rows are read."""
    scan = storage.scan_window(source, run_date, window_days)
    if run_date.isoformat() in scan.lineage.missing_partitions:
        raise ValueError(f"source partition {source.date_column}={run_date.isoformat()} is "
                         f"missing in {source.uri} (partitions found in the window: "
                         f"{scan.lineage.partitions or 'none'})")
    return scan


@task(name="validate_features", cache_policy=NO_CACHE)
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
