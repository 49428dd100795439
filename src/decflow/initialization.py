"""Centroid initialisation in embedding space.

``kmeans_init``: k-means on the embedding z (the DEC paper's choice).
``manifold_init``: a UMAP graph embedding of z, clustered by a full-covariance Gaussian mixture
(the N2D recipe); its posteriors become the first fine-tuning target and its weighted cluster
means in z the starting centroids. Density-based structure that k-means in z misses is carried
into the DEC model, which then needs no UMAP at prediction time.
"""

import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture


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
                  n_neighbors: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture on a UMAP manifold of the embedding.

    Args:
        Z: (n, d) embedding.

    Returns:
        (k, d) centroids in z (posterior-weighted means) and (n, k) posteriors.
    """
    M = manifold_view(Z, n_clusters, random_state, n_neighbors)
    return gmm_refine(M, Z, n_clusters, n_init=n_init, random_state=random_state)


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
