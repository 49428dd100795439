"""Load and validate source data."""

import datetime as dt
import json

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from decflow import storage, validation
from decflow.config import PipelineConfig, SourceConfig
from decflow.storage import Lineage
from decflow.validation import ValidationReport

from .tracking import log_dict


@task(name="load_window", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_window(source: SourceConfig, run_date: dt.date, window_days: int | None = None
                ) -> tuple[pd.DataFrame, Lineage]:
    """Read the training window (or one partition) ending at run_date; that date must exist."""
    frame, lineage = storage.load_window(source, run_date, window_days)
    if run_date.isoformat() in lineage.missing_partitions:
        raise ValueError(f"source partition {source.date_column}={run_date.isoformat()} is "
                         f"missing in {source.uri} (partitions found in the window: "
                         f"{lineage.partitions or 'none'})")
    return frame, lineage


@task(name="validate_features", cache_policy=NO_CACHE)
def validate_features(frame: pd.DataFrame, config: PipelineConfig, run_id: str | None = None,
                      key: str = "validation") -> ValidationReport:
    """Run the expectation suite; keep the result (MLflow + Prefect artifact); fail on errors."""
    report = validation.validate_frame(frame, config.source, config.features, config.validation)
    create_markdown_artifact(key=key, markdown=report.to_markdown(),
                             description="Great Expectations result")
    if run_id is not None:
        log_dict(config, run_id, report.to_dict(), "validation/result.json")
    return validation.check(report)


def lineage_tags(lineage: Lineage) -> dict[str, str]:
    return {"data.source_uri": lineage.source_uri,
            "data.partitions": json.dumps(lineage.partitions),
            "data.missing_partitions": json.dumps(lineage.missing_partitions),
            "data.n_rows": str(lineage.n_rows), "data.digest": lineage.digest}
