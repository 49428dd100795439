"""Scoring and label write-back, partition-wise on the Dask cluster."""

import datetime as dt

from prefect import task
from prefect.cache_policies import NO_CACHE

from decflow.config import PipelineConfig
from decflow.data import validation
from decflow.data.sources import WindowScan
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.engine.payload import scatter_model
from decflow.registry.datasets import LABELS, labels_dataset, log_datasets

from .data import publish_validation
from .runtime import redact_errors


def labels_spec(config: PipelineConfig, version) -> scoring.LabelsSpec:
    return scoring.LabelsSpec(config.registry.model_name, str(version.version),
                              version.run_id or "", dt.datetime.now(dt.timezone.utc),
                              config.train.device)


@task(name="label_partition", cache_policy=NO_CACHE)
@redact_errors
def label_partition(scan: WindowScan, version, model, config: PipelineConfig,
                    run_id: str | None = None, unlabelled_files: list[str] | None = None
                    ) -> dict:
    """Validate every row of one partition and replace its labels atomically (one row per
    source row of the scanned files), chunk-wise on the cluster; nothing is written when a row
    fails validation. ``unlabelled_files`` (files that landed after the scan) are reported."""
    with dask_client(config.compute) as client:
        payload = scatter_model(client, model)
        outcome = scoring.label_partition(client, scan, config, payload,
                                          labels_spec(config, version))
    publish_validation(outcome.validation_result, config, run_id, key="labels-validation")
    validation.check(outcome.validation_result)
    if run_id is not None:
        day = scan.lineage.partitions[-1] if scan.lineage.partitions else ""
        log_datasets(config.tracking_uri(), run_id, [(labels_dataset(
            outcome.path, day, outcome.rows_written, config.registry.model_name,
            str(version.version)), LABELS)])
    return {"path": outcome.path, "rows": outcome.rows_written,
            "model_version": str(version.version),
            "unlabelled_files": list(unlabelled_files or [])}
