"""Load and validate source data."""

import datetime as dt

import pandas as pd

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from decflow.config import PipelineConfig, SourceConfig
from decflow.data import sources
from decflow.data import validation
from decflow.data.sources import WindowScan
from decflow.data.validation import ValidationResult
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.registry.datasets import TRAINING, log_datasets, window_dataset
from decflow.registry.names import Artifact

from .runtime import redact_errors, retry_on_io
from .tracking import log_dict


@task(name="scan_night", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io,
      cache_policy=NO_CACHE)
@redact_errors
def scan_night(source: SourceConfig, run_date: dt.date, window_days: int | None = None,
               min_days: int | None = None) -> WindowScan:
    """``sources.scan_night``: the window (or partition) ending at a night that exists and has
    rows, from file footers."""
    return sources.scan_night(source, run_date, window_days, min_days)


@task(name="snapshot_night", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io,
      cache_policy=NO_CACHE)
@redact_errors
def snapshot_night(window: WindowScan, run_date: dt.date) -> tuple[WindowScan, list[str]]:
    """``sources.snapshot_night``; files that landed since validation are logged."""
    snapshot, late = sources.snapshot_night(window, run_date)
    if late:
        get_run_logger().warning("files landed in %s=%s after validation and are not labelled "
                                 "(a backfill labels them): %s", window.date_column,
                                 run_date.isoformat(), late)
    return snapshot, late


@task(name="validate_features", cache_policy=NO_CACHE)
@redact_errors
def validate_features(scan: WindowScan, config: PipelineConfig, run_id: str | None = None
                      ) -> tuple[ValidationResult, pd.DataFrame]:
    """Run the expectation suite on every row of the window, chunk by chunk on Dask, and take
    the training sample (at most ``train.max_train_rows`` rows, ``sources.training_sample``)
    from the rows the chunks read: the window is read once. Keep the result (MLflow + Prefect
    artifact); fail on errors. The window is also the MLflow run's training dataset input,
    logged first: a run that fails validation shows what it read too."""
    if run_id is not None:
        name = config.source.uri.rstrip("/").rsplit("/", 1)[-1] or "source"
        log_datasets(config.tracking_uri(), run_id,
                     [(window_dataset(scan.lineage, name), TRAINING)])
    with dask_client(config.compute) as client:
        result, sample = scoring.validate_and_sample(client, scan, config)
    publish_validation(result, config, run_id, "validation")
    return validation.check(result), sample


def publish_validation(result: ValidationResult, config: PipelineConfig, run_id: str | None,
                       key: str = "validation") -> None:
    create_markdown_artifact(key=key, markdown=result.to_markdown(),
                             description="Great Expectations result")
    if run_id is not None:
        log_dict(config, run_id, result.to_dict(), Artifact.VALIDATION)
