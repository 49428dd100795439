"""Write-back only: label one date partition with a registered model (no training)."""

import datetime as dt

from prefect import flow

from decflow.config import PipelineConfig
from decflow.engine.compute import WARM_SCORING, run_cluster
from decflow.tasks.data import scan_night
from decflow.tasks.labels import label_partition
from decflow.tasks.runtime import night_lock, prepare_run, redact_errors
from decflow.tasks.registry import load_model


@flow(name="score", flow_run_name="score-{run_date}-{model}")
@redact_errors
def score(config: PipelineConfig, run_date: dt.date, model: str = "champion") -> dict:
    """Validate run_date's partition and label it with `model` (alias or version), chunk-wise
    on the Dask cluster."""
    config = prepare_run(config)
    with run_cluster(config.compute, warm=WARM_SCORING), night_lock(config, run_date):
        return _score(config, run_date, model)


def _score(config: PipelineConfig, run_date: dt.date, model: str) -> dict:
    partition = scan_night(config.source, run_date, 1)
    version, files = load_model(config, model, required=True, as_files=True)
    return label_partition(partition, version, files, config)
