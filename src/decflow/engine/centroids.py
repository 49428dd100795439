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
from decflow.model.initialization import (fit_view, place_blocks, select_manifold_init,
                                          transform_block, view_dimensions)


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
    Z = est.transform(X, training=True)
    runs = []
    handover = Handover()

    def dask_kmeans(space):
        runs.append(kmeans_dask(space, k, client=client, random_state=seed,
                                **config.kmeans.model_dump()))
        handover.done()  # this view's worker is free again: the next view starts there
        return runs[-1].cluster_centers

    if config.model.init != "manifold":
        centers = dask_kmeans(Z)
        return InitialCentroids(centers, None, metrics=_metrics(runs[-1], t0))
    S, space = est.view_data(X, Z)
    views = functools.partial(fit_views_on, client, handover=handover)
    chosen = select_manifold_init(Z, k, n_views=config.model.init_views, fit_views=views,
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


class Handover:
    """The views' consumer tells ``fit_views_on`` that it no longer needs the workers for the
    view last handed over (its Dask k-means ran), so the next view may start."""

    def __init__(self):
        self._due = 0  # views handed over whose worker has not been given the next view
        self._start: Callable[[], None] | None = None

    def done(self) -> None:
        if self._due and self._start is not None:
            self._due -= 1
            self._start()


def fit_views_on(client: distributed.Client, S: np.ndarray, n_components: int, seeds: list,
                 n_neighbors: int, handover: Handover | None = None
                 ) -> Iterator[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]:
    """The UMAP views of ``S`` fitted on the cluster's workers (an
    ``initialization.ViewFitter``), while this process fits the mixtures of the views already
    done. A view is the same as one fitted here (same seed, one thread).

    Each view is one single-threaded task; one runs per worker at a time. A view's
    coordinates are fetched as soon as it is fitted, and the next view starts on
    ``handover.done()`` (without one: when the consumer asks for the next view), so the
    view's Dask k-means finds a free worker. All views submitted at once, a worker went from
    one fit to the next: the coordinates and each view's k-means waited a whole view (about
    a minute at 50,000 rows), and the last view fitted alone while the other worker idled.

    The fitted UMAP stays on its worker; only the chosen one is used again, to place the rows
    outside the sample, in blocks (``initialization.place_blocks``) spread over the workers.
    """
    handover = handover or Handover()
    rows = client.submit(_identity, S, pure=False)  # sent once, not once per view
    fits, coordinates = [], []

    def start() -> None:
        i = len(fits)
        if i < len(seeds):
            fits.append(client.submit(_fit_view, rows, n_components, seeds[i], n_neighbors,
                                      pure=False, key=f"umap-view-{i}-{uuid.uuid4().hex[:8]}"))
            coordinates.append(client.submit(_coordinates, fits[-1], pure=False, priority=10))

    for _ in range(min(len(seeds), max(1, len(client.nthreads())))):
        start()
    handover._start = start
    try:
        for i in range(len(seeds)):
            while handover._due:  # the consumer did not say: it is done with the last view
                handover.done()
            M = coordinates[i].result()
            handover._due += 1
            yield M, functools.partial(_place_on, client, fits[i])
    finally:
        handover._start = None
        for f in (rows, *coordinates):
            f.release()


def _place_on(client: distributed.Client, fit: distributed.Future, rows: np.ndarray
              ) -> np.ndarray:
    """``initialization.place_rows`` with the view fitted in ``fit``: one task per block, the
    blocks dealt to the workers in turn (by data locality all would go to the worker holding
    the fitted view; the others fetch it once)."""
    workers = list(client.nthreads())
    placed, blocks = [], []
    for j, b in enumerate(place_blocks(len(rows))):
        where = [workers[j % len(workers)]]
        blocks.append(client.scatter(rows[b], workers=where))
        placed.append(client.submit(_transform_block, fit, blocks[-1], pure=False,
                                    priority=10, workers=where, allow_other_workers=True))
    try:
        return np.concatenate(client.gather(placed))
    finally:
        for f in (*blocks, *placed):
            f.release()


def _identity(obj):
    return obj


@one_blas_thread
def _fit_view(S: np.ndarray, n_components: int, seed, n_neighbors: int):
    reducer, M = fit_view(S, n_components, seed, n_neighbors)
    # Build the search structures of UMAP's neighbour index here, before the fit is shared:
    # its first transform builds them in place, and a copy pickled for another worker in the
    # meantime was half-built (pynndescent: 'NNDescent' object has no attribute
    # '_rp_forest'). Built, the fit is no longer changed by transforms or by pickling.
    transform_block(reducer, S[:1])
    return reducer, M


def _coordinates(fitted) -> np.ndarray:
    return fitted[1]


@one_blas_thread
def _transform_block(fitted, rows: np.ndarray) -> np.ndarray:
    return transform_block(fitted[0], rows)


def _metrics(km, t0: float) -> dict[str, float]:
    return {"kmeans_inertia": km.inertia, "kmeans_n_iter": km.n_iter,
            "seconds_init": time.perf_counter() - t0}
