"""Evaluation of a fitted clustering: flat float metrics for MLflow, and diagnostic figures.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``), so no
GUI backend or global pyplot state is involved; matplotlib is imported only when a plot is made.
"""

import math
from collections.abc import Callable

import numpy as np

from decflow.model.compiled import UMAP_LOCK, load_umap
from decflow.model.metrics import cluster_size_summary, silhouette_sample, supervised_scores


def cluster_sizes(labels, n_clusters: int) -> dict[int, int]:
    """Rows per cluster id, every id in ``0..n_clusters-1`` present (empty clusters -> 0)."""
    labels = _check_labels(labels, n_clusters)
    return {i: int(c) for i, c in enumerate(np.bincount(labels, minlength=n_clusters))}


def evaluate(Z: np.ndarray, labels: np.ndarray, confidence: np.ndarray, n_clusters: int, *,
             history: dict | None = None, y_true=None, sample_size: int = 5000,
             random_state: int = 0) -> dict[str, float]:
    """Quality metrics of one clustering, as a flat ``{name: float}`` for ``mlflow.log_metrics``.

    Args:
        Z: (n, d) embeddings.
        labels: (n,) cluster ids in ``0..n_clusters-1``.
        confidence: (n,) max_j q_ij per row.
        n_clusters: k, the number of clusters of the model (empty ones count).
        history: the estimator's ``history_``: ``pretrain_loss`` (one float per epoch) and
            ``finetune`` (one dict per target update with ``kl``, ``reconstruction``,
            ``delta_label``, ``step``).
        y_true: optional (n,) ground truth; adds ``acc``, ``nmi``, ``ari``.
        sample_size: rows used for the silhouette.
        random_state: seed of the silhouette sample.

    Returns:
        ``silhouette`` (NaN with fewer than two clusters), ``n_clusters_found`` (non-empty),
        ``smallest_cluster_share``, ``smallest_cluster_ratio`` (share x k: 1.0 = a perfectly
        even split), ``largest_cluster_share``, ``size_entropy`` (normalised, 1.0 = even),
        ``mean_confidence``; with ``history``: ``final_pretrain_loss``, ``final_kl``,
        ``final_reconstruction``, ``final_delta_label``, ``n_target_updates`` (NaN where a
        phase has no rows; ``final_reconstruction`` is NaN for plain DEC); with ``y_true``:
        ``acc``, ``nmi``, ``ari``.

    Raises:
        ValueError: mismatched lengths, no rows, or labels outside ``0..n_clusters-1``.
    """
    labels = _check_labels(labels, n_clusters)
    Z = np.asarray(Z)
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    n = len(labels)
    if Z.ndim != 2 or len(Z) != n or len(confidence) != n:
        raise ValueError(f"Z {Z.shape}, labels ({n},) and confidence ({len(confidence)},) "
                         f"must describe the same rows (Z 2-D)")
    sizes = cluster_size_summary(labels, n_clusters)
    out = {
        "silhouette": silhouette_sample(Z, labels, sample_size=sample_size,
                                        random_state=random_state),
        "n_clusters_found": float(n_clusters - sizes["n_empty"]),
        "smallest_cluster_share": sizes["min_share"],
        "smallest_cluster_ratio": sizes["min_share"] * n_clusters,
        "largest_cluster_share": sizes["max_share"],
        "size_entropy": sizes["size_entropy"],
        "mean_confidence": float(confidence.mean()),
    }
    if history is not None:
        out.update(_history_metrics(history))
    if y_true is not None:
        y_true = np.asarray(y_true)
        if len(y_true) != n:
            raise ValueError(f"y_true has {len(y_true)} rows, labels {n}")
        out.update(supervised_scores(y_true, labels))
    return {k: float(v) for k, v in out.items()}


def _history_metrics(history: dict) -> dict[str, float]:
    pretrain = list(history.get("pretrain_loss") or [])
    finetune = list(history.get("finetune") or [])
    last = finetune[-1] if finetune else {}
    return {
        "final_pretrain_loss": float(pretrain[-1]) if pretrain else math.nan,
        "final_kl": float(last.get("kl", math.nan)),
        "final_reconstruction": float(last.get("reconstruction", math.nan)),
        "final_delta_label": float(last.get("delta_label", math.nan)),
        "n_target_updates": float(len(finetune)),
    }


def _check_labels(labels, n_clusters: int) -> np.ndarray:
    labels = np.asarray(labels).ravel()
    if len(labels) == 0:
        raise ValueError("labels is empty: nothing to evaluate")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer cluster ids, got dtype {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_clusters:
        raise ValueError(f"labels must lie in 0..{n_clusters - 1} (n_clusters={n_clusters}), "
                         f"got values in {lo}..{hi}")
    return labels.astype(np.int64, copy=False)


# ---------------------------------------------------------------------- figures
def figures(history: dict, Z: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
            n_clusters: int, *, random_state: int = 0, project: "Projector | None" = None
            ) -> dict:
    """The run's pictures by name: ``training_curves``, ``cluster_sizes``, ``embedding_2d``,
    ``confidence`` (matplotlib figures; the run report shows them in this order); ``project``
    as in ``plot_projection``."""
    return {"training_curves": plot_training_curves(history),
            "cluster_sizes": plot_cluster_sizes(labels, n_clusters),
            "embedding_2d": plot_projection(Z, labels, random_state=random_state,
                                            project=project),
            "confidence": plot_confidence(confidence, labels, n_clusters)}


def plot_training_curves(history: dict):
    """Pretraining loss per epoch; fine-tuning KL, reconstruction and label change per update.

    Returns:
        ``matplotlib.figure.Figure`` with four panels (a panel without data says so).
    """
    from matplotlib.figure import Figure

    pretrain = list(history.get("pretrain_loss") or [])
    finetune = list(history.get("finetune") or [])
    updates = [row.get("update", i + 1) for i, row in enumerate(finetune)]
    fig = Figure(figsize=(14, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = [
        (axes[0], range(1, len(pretrain) + 1), pretrain, "pretraining loss (MSE)", "epoch"),
        (axes[1], updates, [r.get("kl", math.nan) for r in finetune], "KL(P||Q)",
         "target update"),
        (axes[2], updates, [r.get("reconstruction", math.nan) for r in finetune],
         "reconstruction (MSE)", "target update"),
        (axes[3], updates, [r.get("delta_label", math.nan) for r in finetune],
         "share of labels changed", "target update"),
    ]
    for ax, x, y, title, xlabel in panels:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        y = np.asarray(y, dtype=np.float64)
        if y.size == 0 or not np.isfinite(y).any():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(list(x), y, marker="o" if y.size < 50 else None, markersize=3)
        if (y[np.isfinite(y)] > 0).all() and np.nanmax(y) / np.nanmin(y) > 100:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    return fig


def plot_cluster_sizes(labels, n_clusters: int):
    """Bar chart of cluster shares with the even-split reference line at 1/k.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    sizes = np.array(list(cluster_sizes(labels, n_clusters).values()))
    shares = sizes / sizes.sum()
    fig = Figure(figsize=(max(5.0, 0.45 * n_clusters + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(n_clusters), shares, color="tab:blue")
    ax.axhline(1.0 / n_clusters, color="tab:red", linestyle="--",
               label=f"1/k = {1 / n_clusters:.3g}")
    ax.set_xticks(np.arange(n_clusters))
    ax.set_xlabel("cluster id")
    ax.set_ylabel("share of rows")
    ax.set_title(f"cluster sizes (n={int(sizes.sum())}, k={n_clusters}, "
                 f"empty={int((sizes == 0).sum())})")
    ax.legend()
    return fig


UMAP_MIN_ROWS = 20  # fewer rows than this: a PCA (UMAP's neighbour graph needs some rows)
# project(Z (m, d) float32, random_state) -> (m, 2) coordinates, as ``umap_2d`` gives them
Projector = Callable[[np.ndarray, int], np.ndarray]


def plot_projection(Z, labels, *, method: str = "umap", sample_size: int = 5000,
                    random_state: int = 0, project: Projector | None = None):
    """2-D map of the embedding on a random sample of rows, coloured by cluster.

    UMAP (``n_neighbors=15``, ``min_dist=0.1``) shows the neighbourhoods DEC clusters, which
    a linear projection flattens together. PCA is the fallback where UMAP cannot run: fewer
    than ``UMAP_MIN_ROWS`` rows, an embedding of one dimension, or ``method="pca"``; the
    title says which one was drawn.

    Args:
        Z: (n, d) embeddings.
        labels: (n,) cluster ids.
        method: "umap" (with the fallback) or "pca".
        sample_size: at most this many rows are drawn.
        random_state: seed of the sample and of UMAP.
        project: where the UMAP map is computed (default ``umap_2d`` here); e.g. on a Dask
            worker, where UMAP's code is already compiled (numba compiles its neighbour search
            once per process, about 10 s, and cannot keep it on disk).

    Returns:
        ``matplotlib.figure.Figure`` (legend for up to 20 clusters, a colour bar beyond).
    """
    from matplotlib.figure import Figure

    if method not in ("umap", "pca"):
        raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if Z.ndim != 2 or len(Z) != len(labels) or len(Z) == 0:
        raise ValueError(f"Z {Z.shape} and labels ({len(labels)},) must be non-empty and "
                         f"describe the same rows")
    rng = np.random.default_rng(random_state)
    if len(Z) > sample_size:
        idx = np.sort(rng.choice(len(Z), size=sample_size, replace=False))
        Z, labels = Z[idx], labels[idx]
    if method == "umap" and len(Z) >= UMAP_MIN_ROWS and Z.shape[1] >= 2:
        P = (project or umap_2d)(Z.astype(np.float32), random_state)
        xlabel, ylabel, what = "UMAP 1", "UMAP 2", "UMAP"
    else:
        P, ratio = _pca2(Z)
        xlabel, ylabel = f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%} of variance)"
        what = "PCA"

    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    ids = np.unique(labels)
    if len(ids) <= 20:
        from matplotlib import colormaps

        cmap = colormaps["tab10" if len(ids) <= 10 else "tab20"]
        for i, c in enumerate(ids):
            m = labels == c
            ax.scatter(P[m, 0], P[m, 1], s=6, alpha=0.7, color=cmap(i), label=str(c))
        ax.legend(title="cluster", markerscale=2.5, fontsize="small", loc="best")
    else:
        sc = ax.scatter(P[:, 0], P[:, 1], s=6, alpha=0.7, c=labels, cmap="turbo")
        fig.colorbar(sc, ax=ax, label="cluster")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"embedding, {what} of {len(Z)} rows")
    return fig


def umap_2d(Z: np.ndarray, random_state: int) -> np.ndarray:
    """(m, 2) UMAP map of Z for ``plot_projection`` (a ``Projector``)."""
    umap = load_umap()  # here: only this path needs UMAP (numba, see model.compiled)

    # 200 layout epochs (UMAP's default is 500 below 10k rows): the picture settles well
    # before, at less than half the time.
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(Z) - 1), min_dist=0.1,
                        n_epochs=200, random_state=random_state, n_jobs=1)
    with UMAP_LOCK:
        return reducer.fit_transform(np.asarray(Z, dtype=np.float32))


def plot_confidence(confidence, labels, n_clusters: int):
    """How sure the model is: a histogram of each row's confidence (max_j q_ij; 1/k is a coin
    toss between all clusters) and the mean confidence per cluster.

    Returns:
        ``matplotlib.figure.Figure`` with two panels.
    """
    from matplotlib.figure import Figure

    labels = _check_labels(labels, n_clusters)
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    if len(conf) != len(labels):
        raise ValueError(f"confidence ({len(conf)},) and labels ({len(labels)},) must describe "
                         f"the same rows")
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    left.hist(conf, bins=np.linspace(0, 1, 41), color="tab:blue")
    left.axvline(1 / n_clusters, color="tab:red", linestyle="--",
                 label=f"1/k = {1 / n_clusters:.3g}")
    left.axvline(conf.mean(), color="black", linestyle=":", label=f"mean {conf.mean():.3f}")
    left.set_xlim(0, 1)
    left.set_xlabel("confidence (max soft assignment)")
    left.set_ylabel("rows")
    left.set_title(f"confidence of {len(conf)} rows")
    left.legend(fontsize="small")
    sums = np.bincount(labels, weights=conf, minlength=n_clusters)
    counts = np.bincount(labels, minlength=n_clusters)
    means = np.divide(sums, counts, out=np.full(n_clusters, np.nan), where=counts > 0)
    right.bar(np.arange(n_clusters), np.nan_to_num(means), color="tab:green")
    right.set_xticks(np.arange(n_clusters))
    right.set_ylim(0, 1)
    right.set_xlabel("cluster id")
    right.set_ylabel("mean confidence")
    right.set_title("per cluster")
    return fig


def _pca2(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components (zero-padded for 1-D input) and their variance ratios."""
    Zc = Z - Z.mean(axis=0)
    _, s, Vt = np.linalg.svd(Zc, full_matrices=False)
    P = Zc @ Vt[:2].T
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(min(2, len(var)))
    if P.shape[1] < 2:
        P = np.hstack([P, np.zeros((len(P), 2 - P.shape[1]))])
        ratio = np.append(ratio, np.zeros(2 - len(ratio)))
    return P, ratio
