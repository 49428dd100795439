"""Degenerate clusters (empty, or much smaller than asked for): which they are, re-seeding
their centroids after a k-means initialisation, and the warning that reports them after
fitting."""

import warnings

import numpy as np


class DegenerateClusterWarning(UserWarning):
    """A cluster is empty or much smaller than asked for."""


def degenerate_clusters(sizes: np.ndarray, min_cluster_size: float) -> np.ndarray:
    """Ids of the clusters that are empty or smaller than ``min_cluster_size`` x n / k.

    Args:
        sizes: (n_clusters,) rows per cluster; n is their sum, k their number.
        min_cluster_size: the floor as a fraction of n / k (0 flags empty clusters only).

    Returns:
        (m,) int cluster ids, ascending.
    """
    return np.flatnonzero((sizes == 0) | (sizes < min_cluster_size * sizes.sum() / len(sizes)))


def reseed_degenerate(Z: np.ndarray, centers: np.ndarray, min_cluster_size: float) -> np.ndarray:
    """Move the centroids of empty or tiny clusters onto the points farthest from their
    centroid (as k-means does for empty clusters) and warn which were moved.

    Args:
        Z: (n_samples, n_components) embedded rows.
        centers: (n_clusters, n_components) initial centroids; not modified.
        min_cluster_size: as in ``degenerate_clusters``.

    Returns:
        (n_clusters, n_components) centroids: ``centers`` itself when none is degenerate,
        otherwise a copy with the degenerate ones moved.
    """
    d2 = ((Z[:, None, :] - centers[None]) ** 2).sum(-1)
    labels = d2.argmin(1)
    sizes = np.bincount(labels, minlength=len(centers))
    bad = degenerate_clusters(sizes, min_cluster_size)
    if len(bad) == 0:
        return centers
    far = np.argsort(-d2[np.arange(len(Z)), labels])
    centers = centers.copy()
    for j, row in zip(bad, far):
        centers[j] = Z[row]
    # stacklevel 3: the warning points at whoever called the estimator's fine_tune (or fit)
    warnings.warn(f"re-seeded degenerate clusters after initialisation: "
                  f"{ {int(j): int(sizes[j]) for j in bad} } (cluster id: size)",
                  DegenerateClusterWarning, stacklevel=3)
    return centers


def report_degenerate(labels: np.ndarray, n_clusters: int,
                      min_cluster_size: float) -> dict[int, int]:
    """The clusters left degenerate by fitting, with a ``DegenerateClusterWarning`` if any.

    Args:
        labels: (n_samples,) int cluster ids in 0..n_clusters-1.
        n_clusters: number of clusters k.
        min_cluster_size: as in ``degenerate_clusters``.

    Returns:
        Cluster id -> size of each degenerate cluster (empty dict: none).
    """
    sizes = np.bincount(labels, minlength=n_clusters)
    bad = degenerate_clusters(sizes, min_cluster_size)
    degenerate = {int(j): int(sizes[j]) for j in bad}
    if bad.size:
        n_empty = int((sizes == 0).sum())
        warnings.warn(
            f"{len(bad)} of {n_clusters} clusters are degenerate after fine-tuning "
            f"({n_empty} empty); sizes by cluster id: {degenerate}",
            DegenerateClusterWarning, stacklevel=3)
    return degenerate
