"""The nightly recluster flow: a table of contents over tasks/ (no maths here)."""

import datetime as dt

from prefect import flow

from decflow.config import PipelineConfig
from tasks.data import load_window, validate_features
from tasks.labels import score_partition, write_labels
from tasks.registry import champion_weights, load_champion, register_model
from tasks.tracking import tracked_run
from tasks.train import (embed_features, evaluate_model, fit_dec, init_centroids,
                         pretrain_autoencoder, sample_training_rows)


def yesterday() -> dt.date:
    return dt.date.today() - dt.timedelta(days=1)


@flow(name="recluster")
def recluster(config: PipelineConfig = PipelineConfig(), run_date: dt.date | None = None,
              progress: bool = False) -> dict:
    """Retrain on the window ending at run_date, register the model, write run_date's labels."""
    run_date = run_date or yesterday()
    day = run_date.isoformat()
    with tracked_run(config, f"recluster-{day}", {"decflow.flow": "recluster",
                                                  "decflow.run_date": day}) as run_id:
        frame, lineage = load_window(config.source, run_date)
        report = validate_features(frame, config, run_id)
        train = sample_training_rows(frame, config)
        encoder, X = embed_features(train, config)
        _, champion = load_champion(config)
        warm = champion_weights(champion, encoder, config)
        model = pretrain_autoencoder(X, config, run_id, warm, progress)
        centers, target = init_centroids(model, X, config, run_id)
        model = fit_dec(model, X, centers, target, config, run_id)
        metrics = evaluate_model(model, X, train, config, run_id)
        version = register_model(model, encoder, frame, lineage, report, metrics, config,
                                 run_id, day)
        champion_version, champion = load_champion(config)
        today, _ = load_window(config.source, run_date, 1)
        scores = score_partition(today, champion)
        written = write_labels(today, scores, champion_version, config, run_date)
    return {"run_id": run_id, "run_date": day, "model_version": version,
            "champion_version": str(champion_version.version), "metrics": metrics,
            "labels": written}
