"""Column relevance: how much of each column the other columns of the table predict.

Clusters are structure that several columns share: rows of one group sit close together in
every column that carries the group. A column of noise (a random region code, an id-like
number, free text unrelated to anything else) is independent of the rest of the table, and
after scaling it weighs as much as an informative column: enough to hide an obvious structure
(three groups 6 standard deviations apart in two columns were labelled by one random 3-valued
categorical column beside them, ARI -0.001).

``column_relevance`` measures, without labels, what each column shares with the others: each
row's ``n_neighbors`` nearest rows *in the other columns* predict the column (their mean), and
the relevance is the share of the column's variance that this prediction explains (R^2). An
independent column scores about -1/n_neighbors, one that the other columns determine about 1.
Three rounds: each round measures neighbours with the weights of the round before, so that
noise columns stop blurring the neighbourhoods of the informative ones.

``relevance_weights`` turns relevances into weights in [0, 1]: a column at or above half the
best relevance keeps its full weight, one that explains nothing gets 0, linear in between.
When no column explains anything (no shared structure to find), every weight stays 1.

Limits: structure carried by a single column, or by columns independent of each other (a
grid of two unrelated splits), is not shared, and is kept at full weight only when nothing
else is shared; two noise columns copied from each other predict each other and keep theirs.
"""

import numpy as np

RELEVANCE_ROWS = 3000  # distinct rows sampled to measure relevance (distances are rows^2)
N_NEIGHBORS = 15
N_ROUNDS = 3
MIN_RELEVANCE = 0.05  # below this best relevance nothing is shared: weights stay 1
FULL_WEIGHT_AT = 0.5  # relevance (as a share of the best) from which a column keeps weight 1


def column_relevance(blocks: list[np.ndarray], *, n_neighbors: int = N_NEIGHBORS,
                     n_rounds: int = N_ROUNDS, max_rows: int = RELEVANCE_ROWS,
                     random_state: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Relevance and weight of each column, measured on a sample of distinct rows.

    Args:
        blocks: one (n, d_j) array per column, as the model sees it (a numeric column is one
            scaled dimension, a categorical one its one-hot block, a text column its SVD
            components); every block has the same n rows.
        n_neighbors: rows whose mean predicts a column.
        n_rounds: measurements, each with the weights of the one before.
        max_rows: distinct rows sampled (seeded by ``random_state``).

    Returns:
        (relevance, weight), each (n_columns,): R^2 of each column predicted from its
        neighbours in the others (last round), and ``relevance_weights`` of it. A table of
        one column, or with fewer than ``n_neighbors + 2`` distinct rows, gets relevance NaN
        and weight 1.
    """
    n_cols = len(blocks)
    if n_cols == 0:
        raise ValueError("column_relevance needs at least one column")
    n = len(blocks[0])
    if any(len(b) != n for b in blocks):
        raise ValueError(f"every column needs the same rows, got {[len(b) for b in blocks]}")
    nan, ones = np.full(n_cols, np.nan), np.ones(n_cols)
    if n_cols < 2:
        return nan, ones
    X = np.hstack([np.asarray(b, dtype=np.float32).reshape(n, -1) for b in blocks])
    # duplicated rows would predict every column of each other, noise included
    X = np.unique(X, axis=0)
    if len(X) > max_rows:
        X = X[np.sort(np.random.default_rng(random_state).choice(len(X), max_rows,
                                                                 replace=False))]
    if len(X) < n_neighbors + 2:
        return nan, ones
    edges = np.cumsum([0] + [np.asarray(b).reshape(n, -1).shape[1] for b in blocks])
    parts = [X[:, a:b].astype(np.float64) for a, b in zip(edges[:-1], edges[1:])]
    weight = ones
    relevance = nan
    for _ in range(n_rounds):
        total = np.zeros((len(X), len(X)))
        for w, B in zip(weight, parts):
            if w > 0:
                total += w * w * _sq_distances(B)
        relevance = np.array([_explained(B, total - w * w * _sq_distances(B), n_neighbors)
                              for w, B in zip(weight, parts)])
        weight = relevance_weights(relevance)
    return relevance, weight


def relevance_weights(relevance: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] from relevances: ``clip(r / (FULL_WEIGHT_AT * max r), 0, 1)``; all 1
    when the best relevance is under ``MIN_RELEVANCE`` (or NaN)."""
    r = np.asarray(relevance, dtype=np.float64)
    best = np.nanmax(r) if np.isfinite(r).any() else np.nan
    if not np.isfinite(best) or best < MIN_RELEVANCE:
        return np.ones(len(r))
    return np.clip(np.nan_to_num(r, nan=0.0) / (FULL_WEIGHT_AT * best), 0.0, 1.0)


def _sq_distances(B: np.ndarray) -> np.ndarray:
    """(m, m) squared Euclidean distances between the rows of B (m, d)."""
    sq = np.einsum("ij,ij->i", B, B)
    D = sq[:, None] + sq[None, :] - 2.0 * (B @ B.T)
    return np.maximum(D, 0.0, out=D)


def _explained(B: np.ndarray, D: np.ndarray, n_neighbors: int) -> float:
    """R^2 of B (m, d) predicted by the mean of each row's nearest rows under D (m, m),
    the row itself excluded; 0 for a constant column."""
    sst = float(((B - B.mean(axis=0)) ** 2).sum())
    if sst <= 1e-12 * len(B):
        return 0.0
    D = D.copy()
    np.fill_diagonal(D, np.inf)
    nearest = np.argpartition(D, n_neighbors, axis=1)[:, :n_neighbors]
    predicted = B[nearest].mean(axis=1)
    return 1.0 - float(((B - predicted) ** 2).sum()) / sst
