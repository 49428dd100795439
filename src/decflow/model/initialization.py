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

Views of the embedding, or of the input itself
    The autoencoder earns its place by compressing: on images (digits: 64 pixels, USPS: 256)
    the views of its 10-d embedding z find the digits far better than views of the pixels
    (0.94-0.95 ACC against 0.88 on digits). On a table whose columns span fewer directions
    than z has, it compresses nothing: z is then a free, distorting reparametrisation of the
    input, and views of z lost the structure that views of the input keep (Dry Bean, 16
    correlated shape columns: 0.69 ACC in every view of z against 0.90 in every view of the
    input). ``view_space`` decides from the data alone: the views are fitted on the model's
    scaled input when its effective dimension (the participation ratio of its covariance
    spectrum, ``effective_dimension``) is at most the size of z, and on z otherwise. Measured
    effective dimensions: Dry Bean 2.4, Letter 7.0, digits 13.2, USPS 17.2 (z has 10).
    Silhouettes do not compare across the two spaces: views of the digits pixels score
    0.84 against 0.79 for views of z while finding the digits worse.

Views of a sample, every row placed in the chosen one
    A UMAP fit grows faster than the rows: 36 s a view at 50,000 rows, and 5 views of
    200,000 rows took 21 min (2 cores, ``benchmarks/results/init_views_200k_all.md``), added
    to every nightly run at ``train.max_train_rows``. With ``view_rows`` the views and their
    candidates are fitted on a seeded sample of that many rows; only the chosen view places
    the other rows (UMAP's ``transform``) and its mixture gives their posteriors, so the
    target and the centroids still cover every row: 5 views of 50,000 of 200,000 rows took
    200 s, placing included, on a synthetic embedding whose drawn clusters they found with
    0.998 ACC against 0.9997 for views of all rows. Up to ``view_rows`` nothing changes. A
    small sample costs accuracy: on USPS, views of 3,000 or 6,000 of its 9,298 rows gave
    initial partitions 0.035 and 0.008 below views of all rows.

    The other rows are placed in blocks of ``PLACE_ROWS`` (UMAP's ``transform`` of a block
    does not depend on the blocks before it), so a cluster places them on all its workers at
    once and gets the same coordinates as one process placing them block after block.
"""

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

from decflow.model.compiled import UMAP_LOCK, load_umap

# Rows the silhouette of a candidate is computed on (a fixed sample keeps it O(n)).
SILHOUETTE_ROWS = 5000
# Rows placed in the chosen view per UMAP ``transform`` call (``place_rows``).
PLACE_ROWS = 25_000
# Rows the effective dimension is measured on (a seeded sample).
DIMENSION_ROWS = 20000
INIT_CHOICES = ("manifold", "k-means")  # how the centroids start (the estimator's ``init``)
VIEW_SPACES = ("auto", "embedding", "input")


def effective_dimension(X: np.ndarray, max_rows: int = DIMENSION_ROWS,
                        random_state: int | None = 0) -> float:
    """Participation ratio of the covariance spectrum, (sum l)^2 / sum l^2: the number of
    directions the rows spread in (d for isotropic data, 1 for a line).

    Args:
        X: (n, d); a seeded sample of at most ``max_rows`` rows is used.

    Returns:
        A float in [1, d]; 1.0 when X does not vary.
    """
    X = np.asarray(X, dtype=np.float64)
    if len(X) > max_rows:
        X = X[np.random.default_rng(random_state).choice(len(X), max_rows, replace=False)]
    X = X - X.mean(axis=0)
    lam = np.linalg.svd(X, compute_uv=False) ** 2
    total = float(lam.sum())
    if total <= 0:
        return 1.0
    return total ** 2 / float((lam ** 2).sum())


def view_dimensions(n_clusters: int, n_components: int) -> int:
    """Dimensions of a manifold view: k (the N2D recipe), but no more than the embedding z
    has (``n_components``). 26-d views of Letter's 16 columns scattered its 26 classes: the
    estimator scored 0.373/0.339/0.345 ACC (NMI 0.49-0.50) over 3 seeds; with 10-d views the
    picked partitions scored 0.377/0.372/0.386 (NMI 0.51-0.52) and the estimator 0.393/0.372/
    0.371 (benchmarks/results/tabular_quality.md), and the views fit faster."""
    return max(1, min(int(n_clusters), int(n_components)))


def view_space(dimension: float, n_components: int, setting: str = "auto") -> str:
    """``"input"`` or ``"embedding"``: where the manifold views are fitted (see the module
    docstring). ``"auto"`` picks the input when its effective dimension is at most the size
    of the embedding.

    Args:
        dimension: ``effective_dimension`` of the model's scaled input.
        n_components: size of the embedding z.
    """
    if setting not in VIEW_SPACES:
        raise ValueError(f"view space {setting!r} must be one of {VIEW_SPACES}")
    if setting != "auto":
        return setting
    return "input" if dimension <= n_components else "embedding"


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
                  n_neighbors: int = 20, n_views: int = 1, view_rows: int | None = None,
                  views_of: np.ndarray | None = None, view_dims: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture on a UMAP manifold of the embedding or of ``views_of`` (the best of
    ``n_views`` views by silhouette, see ``select_manifold_init``).

    Args:
        Z: (n, d) embedding.
        views_of: (n, m) rows to fit the views on instead of Z (e.g. the scaled input).

    Returns:
        (k, d) centroids in z (posterior-weighted means) and (n, k) posteriors.
    """
    chosen = select_manifold_init(Z, n_clusters, n_views=n_views, n_init=n_init,
                                  random_state=random_state, n_neighbors=n_neighbors,
                                  view_rows=view_rows, views_of=views_of,
                                  view_dims=view_dims)
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
        view_rows: rows the views were fitted on (all rows unless ``view_rows`` sampled them).
        chosen_view: index (in ``view_seeds``) of the view the chosen candidate was fitted in;
            also the index of that view's ``external_means`` call.
    """

    centers: np.ndarray
    resp: np.ndarray
    silhouettes: list[float] = field(default_factory=list)
    chosen: int = 0
    view_seeds: list[int | None] = field(default_factory=list)
    view_rows: int = 0
    chosen_view: int = 0


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
                         external_means: Callable[[np.ndarray], np.ndarray] | None = None,
                         view_rows: int | None = None, views_of: np.ndarray | None = None,
                         view_dims: int | None = None,
                         fit_views: "ViewFitter | None" = None) -> ManifoldInit:
    """Gaussian mixtures on ``n_views`` UMAP views of z (or of ``views_of``); the candidate
    with the highest silhouette in its own view wins (label-free).

    Args:
        Z: (n, d) embedding; the centroids are posterior-weighted means in it.
        views_of: optional (n, m) rows the views are fitted on instead of Z (the model's
            scaled input, when ``view_space`` says so).
        view_dims: dimensions of each view (default ``n_clusters``; the estimator and the
            flow pass ``view_dimensions``).
        n_views: UMAP views (seeds from ``view_seeds``).
        n_init: mixture restarts per view (the best likelihood is that view's candidate).
        external_means: optional ``fn(view) -> (k, m)`` starting means, e.g. k-means over
            Dask; the mixture started from them is one more candidate per view.
        view_rows: fit the views and candidates on a seeded sample of at most this many rows
            and place the others in the chosen view (None: all rows).
        fit_views: how the UMAP views are fitted (default ``fit_views_here``: one after
            another in this process); e.g. on Dask workers, one per worker at a time
            (``engine.centroids.fit_views_on``). The views are the same either way.

    Returns:
        ``ManifoldInit``; ``centers`` and ``resp`` cover all n rows.
    """
    if n_views < 1:
        raise ValueError(f"n_views={n_views!r} must be >= 1")
    if view_rows is not None and view_rows <= n_clusters:
        raise ValueError(f"view_rows={view_rows!r} must be at least n_clusters + 1 = "
                         f"{n_clusters + 1}")
    n = len(Z)
    S = Z if views_of is None else np.asarray(views_of, dtype=np.float32)
    if len(S) != n:
        raise ValueError(f"views_of has {len(S)} rows, Z has {n}")
    sample = None
    if view_rows is not None and n > view_rows:
        sample = np.sort(np.random.default_rng(random_state).choice(n, view_rows,
                                                                    replace=False))
    Zv = S if sample is None else S[sample]
    seeds = view_seeds(random_state, n_views)
    best, sils, chosen, chosen_view = None, [], 0, 0
    views = (fit_views or fit_views_here)(Zv, view_dims or n_clusters, seeds, n_neighbors)
    n_fitted = 0
    for view, (M, place) in enumerate(views):  # in seed order, each as it is ready
        seed, n_fitted = seeds[view], view + 1
        starts = [None] + ([external_means(M)] if external_means is not None else [])
        for means in starts:
            gmm, resp = _fit_mixture(M, n_clusters, means, n_init, seed)
            sil = partition_silhouette(M, resp.argmax(axis=1))
            if best is None or sil > max(sils):
                best, chosen, chosen_view = (place, M, gmm, resp), len(sils), view
            sils.append(sil)
    if n_fitted != len(seeds):
        raise RuntimeError(f"fit_views gave {n_fitted} views for {len(seeds)} seeds")
    place, M, gmm, resp = best
    if sample is not None:  # place the other rows in the chosen view, keep the sample's own
        rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
        M_all = np.empty((n, M.shape[1]), dtype=np.float32)
        M_all[sample] = M
        M_all[rest] = place(S[rest])
        resp = gmm.predict_proba(M_all)
    return ManifoldInit(_weighted_means(resp, Z), resp.astype(np.float32), sils, chosen, seeds,
                        len(Zv), chosen_view)


# fit_views(S, n_components, seeds, n_neighbors) -> iterable over the seeds, in order, of
# (coordinates (n, n_components) float32, place: (m, d) rows -> (m, n_components) float32
# coordinates of those rows in the view, as ``place_rows`` gives them)
ViewFitter = Callable[[np.ndarray, int, list, int],
                      Iterable[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]]


def fit_views_here(S: np.ndarray, n_components: int, seeds: list, n_neighbors: int
                   ) -> Iterator[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]:
    """The UMAP views of ``S``, one seed after another in this process (a ``ViewFitter``)."""
    for seed in seeds:
        reducer, M = fit_view(S, n_components, seed, n_neighbors)
        yield M, (lambda rows, r=reducer: place_rows(r, rows))


def place_blocks(n: int, block_rows: int | None = None) -> list[slice]:
    """The blocks (of ``PLACE_ROWS`` rows) ``place_rows`` transforms ``n`` rows in, in order."""
    block_rows = block_rows or PLACE_ROWS
    return [slice(a, min(a + block_rows, n)) for a in range(0, n, block_rows)]


def place_rows(reducer, rows: np.ndarray, block_rows: int | None = None) -> np.ndarray:
    """(m, n_components) float32 coordinates of ``rows`` in a fitted view: UMAP's
    ``transform``, one block of ``place_blocks`` at a time (a block's coordinates do not
    depend on the other blocks, so blocks may also be placed apart, e.g. on Dask workers)."""
    out = [transform_block(reducer, rows[b]) for b in place_blocks(len(rows), block_rows)]
    return np.concatenate(out) if out else np.empty((0, reducer.n_components), np.float32)


def transform_block(reducer, rows: np.ndarray) -> np.ndarray:
    """One block of ``place_rows``."""
    with UMAP_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP's transform warns about its random_state too
        return reducer.transform(rows).astype(np.float32)


def manifold_view(Z: np.ndarray, n_components: int, random_state: int | None,
                  n_neighbors: int = 20) -> np.ndarray:
    """UMAP graph embedding of z (min_dist=0, so clusters are tight and well separated).

    Args:
        Z: (n, d) embedding.

    Returns:
        (n, n_components) float32 manifold coordinates.
    """
    return fit_view(Z, n_components, random_state, n_neighbors)[1]


def fit_view(Z: np.ndarray, n_components: int, random_state: int | None, n_neighbors: int):
    """(fitted UMAP, (n, n_components) float32 coordinates of Z); see ``manifold_view``."""
    umap = load_umap()  # here: only this path needs UMAP (numba, see model.compiled)

    n = len(Z)
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, n - 1),
                        min_dist=0.0, metric="euclidean", random_state=random_state,
                        n_jobs=1 if random_state is not None else -1)
    with UMAP_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP warns that random_state disables parallelism
        return reducer, reducer.fit_transform(Z).astype(np.float32)


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
    _, resp = _fit_mixture(M, n_clusters, means_init, n_init, random_state)
    return _weighted_means(resp, Z), resp.astype(np.float32)


def _fit_mixture(M: np.ndarray, n_clusters: int, means_init, n_init: int,
                 random_state: int | None) -> tuple[GaussianMixture, np.ndarray]:
    """The fitted mixture and its (n, k) float64 posteriors on M (see ``gmm_refine``)."""
    gmm = GaussianMixture(n_components=n_clusters, covariance_type="full",
                          n_init=1 if means_init is not None else n_init,
                          means_init=means_init, random_state=random_state, reg_covar=1e-4)
    return gmm, gmm.fit(M).predict_proba(M)


def _weighted_means(resp: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """(k, d) float32 posterior-weighted means of Z."""
    weights = resp / np.maximum(resp.sum(axis=0, keepdims=True), 1e-12)
    return (weights.T @ Z).astype(np.float32)
