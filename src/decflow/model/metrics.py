"""Clustering metrics: with ground truth (ACC, NMI, ARI) and without (silhouette, sizes)."""

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score


def contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n_a_values, n_b_values) co-occurrence counts of two integer labelings of the same rows."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    return table


def cluster_accuracy(y_true, y_pred) -> float:
    """Unsupervised clustering accuracy: best one-to-one match of clusters to classes
    (Hungarian algorithm on the contingency table), as in the DEC paper."""
    y_true = np.unique(np.asarray(y_true), return_inverse=True)[1]
    y_pred = np.unique(np.asarray(y_pred), return_inverse=True)[1]
    table = contingency(y_pred, y_true)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(y_true))


def nmi(y_true, y_pred) -> float:
    """Normalised mutual information (arithmetic normalisation)."""
    return float(normalized_mutual_info_score(y_true, y_pred))


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index."""
    return float(adjusted_rand_score(y_true, y_pred))


def supervised_scores(y_true, y_pred) -> dict[str, float]:
    """ACC, NMI and ARI in one dict."""
    return {"acc": cluster_accuracy(y_true, y_pred), "nmi": nmi(y_true, y_pred),
            "ari": ari(y_true, y_pred)}


def silhouette_sample(Z, labels, sample_size: int = 5000, random_state=0) -> float:
    """Silhouette in embedding space on a random sample of at most ``sample_size`` rows.

    Returns NaN when fewer than two clusters are present.
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    n = len(labels)
    return float(silhouette_score(np.asarray(Z), labels, sample_size=min(sample_size, n),
                                  random_state=random_state))


def cluster_size_summary(labels, n_clusters: int) -> dict:
    """Sizes per cluster id and their spread: counts, smallest/largest share, empty clusters."""
    sizes = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_clusters)
    n = max(int(sizes.sum()), 1)
    return {
        "sizes": sizes.tolist(),
        "n_empty": int((sizes == 0).sum()),
        "min_share": float(sizes.min() / n),
        "max_share": float(sizes.max() / n),
        # 1.0 when all clusters are the same size
        "size_entropy": float(_normalised_entropy(sizes)),
    }


def _normalised_entropy(sizes: np.ndarray) -> float:
    p = sizes[sizes > 0] / sizes.sum()
    if len(sizes) < 2:
        return 1.0
    return float(-(p * np.log(p)).sum() / np.log(len(sizes)))
