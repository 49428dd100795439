"""Stable cluster ids: renumber a new model's clusters after the champion's.

Dashboards key on cluster ids, so a retrained model must call the same group of rows by the
same id. Both models label the same rows (the new model's training rows, the champion with its
own encoder and estimator); the Hungarian algorithm on the co-assignment table of the two
labelings pairs each new cluster with the champion cluster it shares most rows with, and the new
model's centroids are permuted so that each new cluster takes its partner's id.

When k differs between the two models, ids can only be kept where they exist:

* more clusters than the champion (k > k_ref): k_ref new clusters take their partner's id, the
  others take the ids k_ref..k-1 (in the order of their ids before alignment);
* fewer clusters (k < k_ref): every new cluster is paired, but only partners with an id below k
  can be kept; the remaining clusters take the free ids in ascending order.

A pairing does not mean the clusters are the same group (it may share few rows): ``label_churn``
says how much really changed.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class ClusterAlignment:
    """How a model's cluster ids were renumbered after a reference labeling.

    Attributes:
        order: (k,) new id j is the id ``order[j]`` before alignment (``permute_clusters``).
        kept: ids that now name the same group as the reference's cluster of that id.
        label_churn: share of rows whose id differs from the reference's, after alignment.
        label_churn_unaligned: the same before alignment (ids as the fit left them).
        n_rows: rows both labelings cover.
        n_reference_clusters: k of the reference labeling.
    """

    order: np.ndarray = field(repr=False)
    kept: list[int]
    label_churn: float
    label_churn_unaligned: float
    n_rows: int
    n_reference_clusters: int

    @property
    def mapping(self) -> dict[int, int]:
        """Id before alignment -> id after."""
        return {int(old): new for new, old in enumerate(self.order)}

    def to_dict(self) -> dict:
        """JSON-ready summary (string keys)."""
        return {"mapping": {str(k): v for k, v in self.mapping.items()}, "kept": self.kept,
                "label_churn": self.label_churn,
                "label_churn_unaligned": self.label_churn_unaligned, "n_rows": self.n_rows,
                "n_clusters": len(self.order),
                "n_reference_clusters": self.n_reference_clusters}


def co_assignment(labels, reference, n_clusters: int, n_reference: int) -> np.ndarray:
    """(n_clusters, n_reference) rows counted by (label, reference label).

    Args:
        labels: (n,) ids in ``0..n_clusters-1``.
        reference: (n,) ids in ``0..n_reference-1`` for the same rows.
    """
    labels, reference = _check(labels, reference, n_clusters, n_reference)
    table = np.zeros((n_clusters, n_reference), dtype=np.int64)
    np.add.at(table, (labels, reference), 1)
    return table


def match_clusters(labels, reference, n_clusters: int, n_reference: int | None = None
                   ) -> np.ndarray:
    """The permutation that renumbers ``labels`` after ``reference`` (Hungarian matching).

    Args:
        labels: (n,) ids of the new model in ``0..n_clusters-1``.
        reference: (n,) ids of the reference (champion) for the same rows.
        n_clusters: k of the new model.
        n_reference: k of the reference (default ``n_clusters``).

    Returns:
        (n_clusters,) ``order`` such that new id j is old id ``order[j]``, as
        ``DeepEmbeddedClustering.permute_clusters`` takes it. With equal k and identical
        partitions, ``argsort(order)[labels] == reference``.
    """
    return _match(labels, reference, n_clusters, n_reference)[0]


def _match(labels, reference, n_clusters, n_reference):
    """(order, ids kept from the reference: paired, with shared rows)."""
    n_reference = n_clusters if n_reference is None else n_reference
    table = co_assignment(labels, reference, n_clusters, n_reference)
    rows, cols = linear_sum_assignment(table, maximize=True)
    new_id = np.full(n_clusters, -1, dtype=np.int64)
    kept = []
    for old, ref in zip(rows, cols):
        if ref < n_clusters:
            new_id[old] = ref
            if table[old, ref] > 0:
                kept.append(int(ref))
    free = iter(sorted(set(range(n_clusters)) - set(new_id[new_id >= 0].tolist())))
    for old in np.flatnonzero(new_id < 0):
        new_id[old] = next(free)
    return np.argsort(new_id), sorted(kept)


def label_churn(labels, reference) -> float:
    """Share of rows whose id differs between two labelings of the same rows."""
    labels, reference = np.asarray(labels).ravel(), np.asarray(reference).ravel()
    if len(labels) != len(reference) or len(labels) == 0:
        raise ValueError(f"labelings must cover the same non-empty rows, got {len(labels)} "
                         f"and {len(reference)} rows")
    return float(np.mean(labels != reference))


def align_clusters(estimator, X, reference, n_reference: int | None = None) -> ClusterAlignment:
    """Renumber a fitted estimator's clusters after a reference labeling of the rows X, in place.

    Args:
        estimator: fitted ``DeepEmbeddedClustering``; its centroids are permuted.
        X: (n, d) rows in the estimator's input space (e.g. its training rows).
        reference: (n,) the reference model's (champion's) ids for the same rows.
        n_reference: k of the reference (default: the estimator's k).

    Returns:
        ``ClusterAlignment`` (order, kept ids, churn before and after).
    """
    k = estimator.n_clusters
    n_reference = k if n_reference is None else n_reference
    reference = np.asarray(reference).ravel()
    labels = np.asarray(estimator.predict(X)).ravel()
    order, kept = _match(labels, reference, k, n_reference)
    new_id = np.argsort(order)
    estimator.permute_clusters(order)
    return ClusterAlignment(order=order, kept=kept,
                            label_churn=label_churn(new_id[labels], reference),
                            label_churn_unaligned=label_churn(labels, reference),
                            n_rows=len(labels), n_reference_clusters=n_reference)


def _check(labels, reference, n_clusters: int, n_reference: int):
    labels = np.asarray(labels).ravel()
    reference = np.asarray(reference).ravel()
    if len(labels) != len(reference) or len(labels) == 0:
        raise ValueError(f"labels ({len(labels)} rows) and reference ({len(reference)} rows) "
                         f"must label the same non-empty rows")
    for name, ids, k in (("labels", labels, n_clusters), ("reference", reference, n_reference)):
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} must be integer cluster ids, got dtype {ids.dtype}")
        if ids.min() < 0 or ids.max() >= k:
            raise ValueError(f"{name} must lie in 0..{k - 1}, got {ids.min()}..{ids.max()}")
    return labels.astype(np.int64), reference.astype(np.int64)
