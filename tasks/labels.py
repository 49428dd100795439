"""Scoring and label write-back."""

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from decflow import storage
from decflow.config import PipelineConfig
from decflow.tracking import score_frame


@task(name="score_partition", cache_policy=NO_CACHE)
def score_partition(frame: pd.DataFrame, model) -> pd.DataFrame:
    """cluster_id / confidence / distance for each row, with the model's encoder and network."""
    return score_frame(model.encoder, model.estimator, frame)


@task(name="write_labels", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def write_labels(frame: pd.DataFrame, scores: pd.DataFrame, version, config: PipelineConfig,
                 run_date) -> dict:
    """Replace the run date's labels partition atomically (one row per source row)."""
    id_col = config.source.id_column
    table = storage.labels_table(
        frame[id_col], scores["cluster_id"], scores["confidence"], scores["distance"],
        id_column=id_col, model_name=config.registry.model_name,
        model_version=str(version.version), run_id=version.run_id or "")
    path = storage.write_partition(config.labels_uri(), config.source.date_column, run_date,
                                   table)
    return {"path": path, "rows": table.num_rows, "model_version": str(version.version)}
