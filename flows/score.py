"""Write-back only: label one date partition with a registered model (no training)."""

import datetime as dt

from prefect import flow

from decflow.config import PipelineConfig
from tasks.data import scan_window
from tasks.labels import label_partition
from tasks.registry import load_model


@flow(name="score")
def score(config: PipelineConfig, run_date: dt.date, model: str = "champion") -> dict:
    """Validate run_date's partition and label it with `model` (alias or version), chunk-wise
    on the Dask cluster."""
    partition = scan_window(config.source, run_date, 1)
    version, scorer = load_model(config, model)
    if version is None:
        raise ValueError(f"model {config.registry.model_name!r} has no version or alias "
                         f"{model!r} in {config.tracking_uri()}")
    return label_partition(partition, version, scorer, config)
