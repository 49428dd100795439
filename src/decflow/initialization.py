"""Centroid initialisation in embedding space.

``kmeans_init``: k-means on the embedding z (the DEC paper's choice).
``manifold_init``: a UMAP graph embedding of z, clustered by a full-covariance Gaussian mixture
(the N2D recipe); its posteriors become the fine-tuning target and its weighted cluster means in
z the starting centroids. Density-based structure that k-means in z misses is carried into the
DEC model, which then needs no UMAP at prediction time.

Several views, one chosen without labels
    UMAP's own seed decides more than the mixture's restarts do: on one pretrained digits
    embedding, five views gave partitions of 0.892 to 0.949 ACC, and a view that merges two
    digits and splits a third stays wrong through any number of mixture restarts in it. So
    ``select_manifold_init`` fits ``n_views`` views (each with its mixture restarts, plus any
    externally computed starting means such as the Dask k-means centres) and keeps the
    candidate partition with the highest silhouette in its own view. The silhouette reads only
    the view coordinates and the candidate's labels, never a truth column. Measured on 5
    pretrained digits embeddings: with 5 views the highest silhouette picked a partition at
    most 0.005 ACC below the best of 6 views of that embedding, never a merged one
    (``benchmarks/results/quality.md``).
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

# Rows the silhouette of a candidate is computed on (a fixed sample keeps it O(n)).
SILHOUETTE_ROWS = 5000


def kmeans_init(Z: np.ndarray, n_clusters: int, n_init: int, random_state: int | None
                ) -> np.ndarray:
    """k-means centroids of the embedding.

    Args:
        Z: (n, d) embedding.

    Returns:
        (k, d) centroids.
    """
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=random_state)
    km.fit(Z)
    return km.cluster_centers_.astype(np.float32)


def manifold_init(Z: np.ndarray, n_clusters: int, n_init: int, random_state: int | None,
                  n_neighbors: int = 20, n_views: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture on a UMAP manifold of the embedding (the best of ``n_views`` views by
    silhouette, see ``select_manifold_init``).

    Args:
        Z: (n, d) embedding.

    Returns:
        (k, d) centroids in z (posterior-weighted means) and (n, k) posteriors.
    """
    chosen = select_manifold_init(Z, n_clusters, n_views=n_views, n_init=n_init,
                                  random_state=random_state, n_neighbors=n_neighbors)
    return chosen.centers, chosen.resp


@dataclass
class ManifoldInit:
    """The chosen initial partition and what it was chosen from.

    Attributes:
        centers: (k, d) centroids in z.
        resp: (n, k) mixture posteriors (the fine-tuning target).
        silhouettes: one per candidate, in the order fitted (view by view; within a view the
            mixture restarts first, then each external start).
        chosen: index of the chosen candidate in ``silhouettes``.
        view_seeds: the UMAP seed of each view.
    """

    centers: np.ndarray
    resp: np.ndarray
    silhouettes: list[float] = field(default_factory=list)
    chosen: int = 0
    view_seeds: list[int | None] = field(default_factory=list)


def view_seeds(random_state: int | None, n_views: int) -> list[int | None]:
    """UMAP seeds of the views: the first is ``random_state`` itself (so one view is the
    single-view initialisation), the others derived from it; all None when it is None."""
    if random_state is None:
        return [None] * n_views
    derived = np.random.SeedSequence(random_state).generate_state(max(n_views - 1, 0))
    return [int(random_state)] + [int(x >> 1) for x in derived]


def partition_silhouette(M: np.ndarray, labels: np.ndarray, random_state: int | None = 0
                         ) -> float:
    """Silhouette of ``labels`` in the view ``M`` on at most ``SILHOUETTE_ROWS`` rows; -1 when
    the partition has fewer than two clusters (it cannot be scored, and should not win)."""
    if len(np.unique(labels)) < 2:
        return -1.0
    rows = min(len(M), SILHOUETTE_ROWS)
    return float(silhouette_score(M, labels, sample_size=rows if rows < len(M) else None,
                                  random_state=random_state))


def select_manifold_init(Z: np.ndarray, n_clusters: int, *, n_views: int = 1, n_init: int = 10,
                         random_state: int | None = None, n_neighbors: int = 20,
                         external_means: Callable[[np.ndarray], np.ndarray] | None = None
                         ) -> ManifoldInit:
    """Gaussian mixtures on ``n_views`` UMAP views of z; the candidate with the highest
    silhouette in its own view wins (label-free).

    Args:
        Z: (n, d) embedding.
        n_views: UMAP views (seeds from ``view_seeds``).
        n_init: mixture restarts per view (the best likelihood is that view's candidate).
        external_means: optional ``fn(view) -> (k, m)`` starting means, e.g. k-means over
            Dask; the mixture started from them is one more candidate per view.

    Returns:
        ``ManifoldInit``.
    """
    if n_views < 1:
        raise ValueError(f"n_views={n_views!r} must be >= 1")
    seeds = view_seeds(random_state, n_views)
    best, sils, chosen = None, [], 0
    for seed in seeds:
        M = manifold_view(Z, n_clusters, seed, n_neighbors)
        starts = [None] + ([external_means(M)] if external_means is not None else [])
        for means in starts:
            centers, resp = gmm_refine(M, Z, n_clusters, means_init=means, n_init=n_init,
                                       random_state=seed)
            sil = partition_silhouette(M, resp.argmax(axis=1))
            if best is None or sil > max(sils):
                best, chosen = (centers, resp), len(sils)
            sils.append(sil)
    return ManifoldInit(best[0], best[1], sils, chosen, seeds)


def manifold_view(Z: np.ndarray, n_components: int, random_state: int | None,
                  n_neighbors: int = 20) -> np.ndarray:
    """UMAP graph embedding of z (min_dist=0, so clusters are tight and well separated).

    Args:
        Z: (n, d) embedding.

    Returns:
        (n, n_components) float32 manifold coordinates.
    """
    import umap  # imported here: numba compilation is slow and only this path needs it

    n = len(Z)
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, n - 1),
                        min_dist=0.0, metric="euclidean", random_state=random_state,
                        n_jobs=1 if random_state is not None else -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP warns that random_state disables parallelism
        return reducer.fit_transform(Z).astype(np.float32)


def gmm_refine(M: np.ndarray, Z: np.ndarray, n_clusters: int, *, means_init=None,
               n_init: int = 10, random_state: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Full-covariance Gaussian mixture on the manifold view, mapped back to centroids in z.

    Args:
        M: (n, m) manifold coordinates of the same rows as Z.
        Z: (n, d) embedding.
        means_init: optional (k, m) starting means (e.g. k-means centres computed over Dask);
            when given a single mixture is fitted from them.

    Returns:
        (k, d) centroids in z (posterior-weighted means) and (n, k) posteriors.
    """
    gmm = GaussianMixture(n_components=n_clusters, covariance_type="full",
                          n_init=1 if means_init is not None else n_init,
                          means_init=means_init, random_state=random_state, reg_covar=1e-4)
    resp = gmm.fit(M).predict_proba(M)
    weights = resp / np.maximum(resp.sum(axis=0, keepdims=True), 1e-12)
    centers = weights.T @ Z
    return centers.astype(np.float32), resp.astype(np.float32)
