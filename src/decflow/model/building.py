"""The estimator a pipeline config describes: built, pretrained, or warm-started from a fitted
model's autoencoder. The nightly run and ``decflow sweep-k`` both build through here, so both
train the same network."""

import numpy as np

from decflow.model.estimator import DeepEmbeddedClustering


def estimator_from_config(config, callbacks=None) -> DeepEmbeddedClustering:
    """The estimator a pipeline config describes (``model``, ``train``, ``kmeans.n_init``):
    the nightly run's and ``decflow sweep-k``'s, so both train the same network.

    Args:
        config: a ``decflow.config.PipelineConfig``.
        callbacks: training callbacks (None: none).
    """
    m, t = config.model, config.train
    return DeepEmbeddedClustering(
        m.n_clusters, n_components=m.n_components, hidden=tuple(m.hidden), alpha=m.alpha,
        gamma=m.gamma, input_dropout=m.input_dropout, init=m.init,
        min_cluster_size=m.min_cluster_size, pretrain_epochs=t.pretrain_epochs,
        pretrain_steps=t.pretrain_steps, pretrain_lr=t.pretrain_lr, finetune_lr=t.finetune_lr,
        update_interval=t.update_interval, tol=t.tol, max_iter=t.max_iter,
        batch_size=t.batch_size, n_init=config.kmeans.n_init, view_space=m.view_space,
        init_views=m.init_views,
        init_view_rows=m.init_view_rows,
        anchor_updates=t.anchor_updates, device=t.device,
        inference_precision=t.inference_precision, random_state=t.random_state,
        callbacks=callbacks)


def pretrain_from_config(config, X: np.ndarray, callbacks=None, warm_start: dict | None = None,
                         epochs: int | None = None) -> DeepEmbeddedClustering:
    """``estimator_from_config`` with its autoencoder pretrained on ``X``: the nightly run's
    and ``decflow sweep-k``'s pretraining.

    Args:
        X: (n, d) encoded training rows.
        warm_start: autoencoder weights to start from (``compatible_weights``); then a
            quarter of the full budget runs (``train.warm_start_epochs`` "auto") or that many.
        epochs: override the number of epochs (the sweep's ``--pretrain-epochs``).
    """
    est = estimator_from_config(config, callbacks)
    if epochs is None and warm_start is not None:
        t = config.train
        epochs = (max(1, est.pretrain_epochs_for(len(X)) // 4)
                  if t.warm_start_epochs == "auto" else t.warm_start_epochs)
    return est.pretrain(X, warm_start=warm_start, epochs=epochs)


def compatible_weights(old_encoder, old_estimator: DeepEmbeddedClustering, encoder,
                       hidden, n_components: int) -> dict | None:
    """A copy of a fitted model's autoencoder weights when a new model can start from them
    (warm start): the same feature layout (``schema_digest``) and the same architecture
    (``hidden`` widths and ``n_components``); None otherwise."""
    same_arch = (list(old_estimator.hidden) == list(hidden)
                 and old_estimator.n_components == n_components)
    if old_encoder.schema_digest() != encoder.schema_digest() or not same_arch:
        return None
    return {k: v.clone() for k, v in old_estimator.autoencoder_.state_dict().items()}
