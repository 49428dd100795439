"""The initial centroids of a nightly fit: k-means over Dask on the embedding, or the manifold
initialisation (``model.initialization``) with one Dask k-means per view."""

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import distributed
import numpy as np

from decflow.config import PipelineConfig
from decflow.engine.compute import one_blas_thread
from decflow.engine.kmeans import kmeans_dask
from decflow.model.estimator import DeepEmbeddedClustering
from decflow.model.initialization import fit_view, select_manifold_init, view_dimensions


@dataclass
class InitialCentroids:
    """What the initialisation chose and what it measured."""

    centers: np.ndarray  # (k, n_components) in z
    target: np.ndarray | None  # (n, k) posteriors for fine-tuning (manifold init), else None
    view_space: str | None = None  # where the views were fitted: "z" or "input" (manifold)
    metrics: dict[str, float] = field(default_factory=dict)


def init_centroids(est: DeepEmbeddedClustering, X: np.ndarray, config: PipelineConfig,
                   client: distributed.Client) -> InitialCentroids:
    """k-means over Dask on the embedding of ``X``, or (``model.init="manifold"``) Gaussian
    mixtures on ``model.init_views`` UMAP views of it (or of the scaled input,
    ``model.view_space``), each also started from the Dask k-means centres of its view, the
    candidate with the highest silhouette in its view kept. The views are fitted on at most
    ``model.init_view_rows`` rows; the chosen one places the others.

    Args:
        est: a pretrained estimator.
        X: (n, d) encoded training rows.
        client: the run's Dask client.

    Returns:
        The centroids, the fine-tuning target (manifold init), and the metrics
        ``kmeans_inertia``, ``kmeans_n_iter``, ``seconds_init`` (and, for the manifold init,
        ``init_silhouette``, ``init_candidate``, ``init_view_rows``, ``input_dimension``).
    """
    t0 = time.perf_counter()
    k, seed = config.model.n_clusters, config.train.random_state
    Z = est.transform(X)
    runs = []

    def dask_kmeans(space):
        runs.append(kmeans_dask(space, k, client=client, random_state=seed,
                                **config.kmeans.model_dump()))
        return runs[-1].cluster_centers

    if config.model.init != "manifold":
        centers = dask_kmeans(Z)
        return InitialCentroids(centers, None, metrics=_metrics(runs[-1], t0))
    S, space = est.view_data(X, Z)
    chosen = select_manifold_init(Z, k, n_views=config.model.init_views,
                                  fit_views=functools.partial(fit_views_on, client),
                                  n_init=config.kmeans.n_init, random_state=seed,
                                  external_means=dask_kmeans,
                                  view_rows=config.model.init_view_rows,
                                  views_of=S if space == "input" else None,
                                  view_dims=view_dimensions(k, config.model.n_components))
    extra = {"init_silhouette": chosen.silhouettes[chosen.chosen],
             "init_candidate": chosen.chosen, "init_view_rows": chosen.view_rows,
             "input_dimension": est.input_dimension_}
    # one Dask k-means per view: the chosen candidate's view tells which
    return InitialCentroids(chosen.centers, chosen.resp, space,
                            {**_metrics(runs[chosen.chosen_view], t0), **extra})


def fit_views_on(client: distributed.Client, S: np.ndarray, n_components: int, seeds: list,
                 n_neighbors: int) -> Iterator[tuple[np.ndarray, Callable[[], object]]]:
    """The UMAP views of ``S`` fitted on the cluster's workers, all submitted at once
    (``initialization.ViewFitter``): each view is one single-threaded task, so the views of a
    nightly run take a fraction of their one-after-another time on idle workers, while this
    process fits the mixtures of the views already done. A view is the same as one fitted
    here (same seed, one thread). The fitted UMAP stays on its worker; only the chosen one is
    fetched, to place the rows outside the sample. Fits run after any other task (priority
    -1), so each view's Dask k-means does not wait behind the views still to fit.
    """
    rows = client.submit(_identity, S, pure=False)  # sent once, not once per view
    fits = [client.submit(_fit_view, rows, n_components, seed, n_neighbors, pure=False,
                          priority=-1, key=f"umap-view-{i}-{uuid.uuid4().hex[:8]}")
            for i, seed in enumerate(seeds)]
    coordinates = [client.submit(_coordinates, f, pure=False) for f in fits]
    try:
        for fit, coords in zip(fits, coordinates):
            yield coords.result(), functools.partial(_reducer, fit)
    finally:
        for f in (rows, *coordinates):
            f.release()


def _identity(obj):
    return obj


@one_blas_thread
def _fit_view(S: np.ndarray, n_components: int, seed, n_neighbors: int):
    return fit_view(S, n_components, seed, n_neighbors)


def _coordinates(fitted) -> np.ndarray:
    return fitted[1]


def _reducer(fit: distributed.Future):
    return fit.result()[0]


def _metrics(km, t0: float) -> dict[str, float]:
    return {"kmeans_inertia": km.inertia, "kmeans_n_iter": km.n_iter,
            "seconds_init": time.perf_counter() - t0}
