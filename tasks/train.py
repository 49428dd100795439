"""Feature embedding, pretraining, Dask centroid initialisation, DEC fine-tuning, evaluation."""

import functools
import re

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from decflow import DeepEmbeddedClustering
from decflow.config import PipelineConfig
from decflow.engine import centroids
from decflow.engine.compute import dask_client
from decflow.insight import evaluation
from decflow.model.building import pretrain_from_config
from decflow.model.callbacks import LogProgress, ProgressBar
from decflow.model.features import FeatureEncoder
from decflow.registry.names import Artifact, Tag
from decflow.registry.runs import MlflowCallback

from .runtime import redact_errors
from .tracking import client, log_dict, log_figure, log_metrics


def _callbacks(config: PipelineConfig, run_id: str, progress: bool) -> list:
    cbs = [MlflowCallback(client(config), run_id), LogProgress()]
    return cbs + [ProgressBar()] if progress else cbs


@task(name="embed_features", cache_policy=NO_CACHE)
@redact_errors
def embed_features(frame: pd.DataFrame, config: PipelineConfig, run_id: str | None = None
                   ) -> tuple[FeatureEncoder, np.ndarray]:
    """Fit the feature encoder on the training rows and embed them; log each column's weight
    and relevance (``features/column_weights.json``, metrics ``feature_weight.<column>``)."""
    encoder = FeatureEncoder(config.features)
    X = encoder.fit_transform(frame)
    if run_id is not None:
        weights = {c: {"weight": w, "relevance": encoder.relevance_[c]}
                   for c, w in encoder.weights_.items()}
        log_dict(config, run_id, {"column_weighting": config.features.column_weighting,
                                  "columns": weights}, Artifact.COLUMN_WEIGHTS)
        log_metrics(config, run_id, {f"feature_weight.{_metric_name(c)}": w
                                     for c, w in encoder.weights_.items()})
    return encoder, X


def _project_on(dask, Z: np.ndarray, random_state: int) -> np.ndarray:
    return dask.submit(evaluation.umap_2d, Z, random_state, pure=False).result()


def _metric_name(column: str) -> str:
    """A column name as MLflow accepts in a metric key (letters, digits, ``_-.`` and space)."""
    return re.sub(r"[^\w\-. ]", "_", column)


@task(name="pretrain_autoencoder", cache_policy=NO_CACHE)
@redact_errors
def pretrain_autoencoder(X: np.ndarray, config: PipelineConfig, run_id: str,
                         warm_start: dict | None = None, progress: bool = False
                         ) -> DeepEmbeddedClustering:
    """Pretrain the autoencoder (warm start from the champion's weights when given)."""
    est = pretrain_from_config(config, X, _callbacks(config, run_id, progress), warm_start)
    tags = {"pretrain.warm_start": str(warm_start is not None),
            "pretrain.epochs": str(len(est.history_["pretrain_loss"]))}
    client(config).set_tag(run_id, Tag.WARM_START, tags["pretrain.warm_start"])
    log_metrics(config, run_id, {"seconds_pretrain": est.timings_["pretrain"]})
    return est


@task(name="init_centroids", cache_policy=NO_CACHE)
@redact_errors
def init_centroids(est: DeepEmbeddedClustering, X: np.ndarray, config: PipelineConfig,
                   run_id: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The initial centroids (``engine.centroids.init_centroids``: k-means over Dask, or the
    manifold initialisation), its metrics and the view space logged to the run.

    Returns:
        (k, n_components) centroids in z and, for the manifold init, (n, k) posteriors used as
        the fine-tuning targets.
    """
    with dask_client(config.compute) as dask:
        init = centroids.init_centroids(est, X, config, dask)
    if init.view_space is not None:
        client(config).set_tag(run_id, Tag.INIT_VIEW_SPACE, init.view_space)
    log_metrics(config, run_id, init.metrics)
    return init.centers, init.target


@task(name="fit_dec", cache_policy=NO_CACHE)
@redact_errors
def fit_dec(est: DeepEmbeddedClustering, X: np.ndarray, centers: np.ndarray,
            target: np.ndarray | None, config: PipelineConfig, run_id: str
            ) -> DeepEmbeddedClustering:
    """DEC/IDEC self-training from the given centroids (GPU when present)."""
    est.fine_tune(X, init=centers, target=target)
    log_metrics(config, run_id, {"seconds_finetune": est.timings_["finetune"],
                                 "n_iter": est.n_iter_, "converged": float(est.converged_)})
    return est


@task(name="evaluate_model", cache_policy=NO_CACHE)
@redact_errors
def evaluate_model(est: DeepEmbeddedClustering, X: np.ndarray, frame: pd.DataFrame,
                   config: PipelineConfig, run_id: str) -> dict[str, float]:
    """Unsupervised metrics (and ACC/NMI/ARI with a label column), plots, a summary artifact."""
    Z = est.transform(X)
    ids, conf, _ = est.assign(X)
    label_col = config.source.label_column
    y = frame[label_col].to_numpy() if label_col and label_col in frame else None
    metrics = evaluation.evaluate(Z, ids, conf, config.model.n_clusters, history=est.history_,
                                  y_true=y, random_state=config.train.random_state or 0)
    log_metrics(config, run_id, metrics)
    # the 2-D map on a worker of the run's cluster: UMAP's code is compiled there (the views)
    with dask_client(config.compute) as dask:
        figures = evaluation.figures(est.history_, Z, ids, conf, config.model.n_clusters,
                                     random_state=config.train.random_state or 0,
                                     project=functools.partial(_project_on, dask))
    for name, fig in figures.items():
        log_figure(config, run_id, fig, f"{Artifact.PLOTS}/{name}.png")
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in metrics.items())
    create_markdown_artifact(key="recluster-metrics", description="Model quality",
                             markdown=f"| metric | value |\n|---|---|\n{rows}\n")
    return metrics
