"""Write-back only: label one date partition with a registered model (no training)."""

import datetime as dt

from prefect import flow

from decflow.config import PipelineConfig
from tasks.data import load_window, validate_features
from tasks.labels import score_partition, write_labels
from tasks.registry import load_model


@flow(name="score")
def score(config: PipelineConfig, run_date: dt.date, model: str = "champion") -> dict:
    """Validate run_date's partition, score it with `model` (alias or version), write labels."""
    frame, _ = load_window(config.source, run_date, 1)
    validate_features(frame, config)
    version, scorer = load_model(config, model)
    if version is None:
        raise ValueError(f"model {config.registry.model_name!r} has no version or alias "
                         f"{model!r} in {config.tracking_uri()}")
    scores = score_partition(frame, scorer)
    return write_labels(frame, scores, version, config, run_date)
