"""k-means over a Dask cluster: k-means|| seeding, then Lloyd iterations, all partition-wise.

Rows stay on the workers as row partitions of at most ``chunk_rows`` rows. Every pass over the
data is one task per partition returning a small summary (per-centre sums and counts, inertia,
a few far points, sampled candidates), summed on the cluster in a tree, so only arrays of size
(restarts, k, d) reach the client. All ``n_init`` restarts run together: one pass per Lloyd
iteration serves every restart that has not converged yet.

Randomness is derived from ``(random_state, partition index, round)``, so a fixed
``random_state`` gives the same centres whatever order the cluster runs the tasks in.
"""

# Over 500 lines on purpose: one algorithm (seeding, Lloyd passes, their partition-wise kernels
# and the tree reductions they share); each part is tested against scikit-learn's k-means.

import logging
import warnings
from dataclasses import dataclass

import dask.array as da
import distributed
import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from decflow.engine.compute import one_blas_thread

_log = logging.getLogger(__name__)

# Distances per sub-block inside a task: 96 KiB stays in cache and under glibc's mmap threshold
# (Dask's nanny sets MALLOC_TRIM_THRESHOLD_, which pins that threshold at 128 KiB; larger
# temporaries are then mmapped and unmapped on every sub-block, three times slower).
_BLOCK_ELEMS = 12_288
_FANIN = 16  # partition summaries combined per reduction task
_INLINE_BYTES = 100_000  # larger task arguments go to the cluster once, not copied per task


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of ``kmeans_dask``."""

    cluster_centers: np.ndarray  # (k, d) float32, best restart
    inertia: float  # sum of squared distances to the nearest centre, best restart
    n_iter: int  # Lloyd iterations of the best restart
    inertias: list[float]  # final inertia of every restart


@dataclass(frozen=True)
class _Partitions:
    blocks: list[distributed.Future]  # (n_p, d) float32 row partitions, none empty
    sizes: np.ndarray  # (P,) rows per partition
    variance: float  # mean per-feature variance of X

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    @property
    def n_samples(self) -> int:
        return int(self.sizes.sum())


def kmeans_dask(X, n_clusters: int, *, client: distributed.Client, n_init: int = 10,
                max_iter: int = 300, tol: float = 1e-4, oversampling_factor: float = 2.0,
                init_rounds: int = 5, chunk_rows: int = 50_000,
                random_state=None) -> KMeansResult:
    """k-means with k-means|| seeding and ``n_init`` restarts, run over a Dask cluster.

    The keyword arguments after ``client`` match ``KMeansConfig``, so
    ``kmeans_dask(Z, k, client=c, **config.kmeans.model_dump())`` works.

    Args:
        X: (n, d) numpy array or dask array; cast to float32 and split into row partitions of
            at most ``chunk_rows`` rows (a dask array of unknown chunk lengths keeps its own).
        n_clusters: k.
        client: the Dask client whose cluster does the work.
        n_init: independent restarts; the one with the lowest inertia wins.
        max_iter: Lloyd iterations per restart at most.
        tol: a restart converges when the squared centre shift, summed over centres, is at most
            ``tol`` times the mean per-feature variance of X (scikit-learn's meaning).
        oversampling_factor: k-means|| samples about ``oversampling_factor * k`` points a round.
        init_rounds: k-means|| sampling rounds.
        chunk_rows: rows per partition (bounds the memory of each task).
        random_state: int, numpy Generator/RandomState or None.

    Returns:
        ``KMeansResult`` with (k, d) float32 centres.

    Raises:
        ValueError: bad parameters, X not 2-D, fewer rows than clusters, NaN or infinity in X.
    """
    _check_positive(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter,
                    init_rounds=init_rounds, chunk_rows=chunk_rows)
    if not tol >= 0:
        raise ValueError(f"tol={tol} should be >= 0")
    if not oversampling_factor > 0:
        raise ValueError(f"oversampling_factor={oversampling_factor} should be > 0")
    X = _check_array(X)
    if not np.isnan(X.shape[0]) and X.shape[0] < n_clusters:
        raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={n_clusters}")
    seed = _seed_from(random_state)

    parts = _describe(client, _partition_rows(X, client, chunk_rows))
    if parts.n_samples < n_clusters:  # dask arrays of unknown length are only checked here
        raise ValueError(f"n_samples={parts.n_samples} should be >= n_clusters={n_clusters}")
    _log.info("k-means: k=%d, %d restarts over %d rows x %d in %d partitions (k-means|| "
              "seeding, %d rounds)", n_clusters, n_init, parts.n_samples, X.shape[1],
              len(parts.blocks), init_rounds)
    centers = _init_kmeans_parallel(client, parts, n_clusters, n_init, oversampling_factor,
                                    init_rounds, seed)
    centers, inertias, n_iters = _lloyd(client, parts, centers, max_iter, tol * parts.variance)
    best = int(np.argmin(inertias))
    _log.info("k-means done: best of %d restarts has inertia %.6g after %d iterations "
              "(restart inertias %.6g .. %.6g)", n_init, inertias[best], n_iters[best],
              float(np.min(inertias)), float(np.max(inertias)))
    return KMeansResult(cluster_centers=centers[best].astype(np.float32),
                        inertia=float(inertias[best]), n_iter=int(n_iters[best]),
                        inertias=[float(v) for v in inertias])


def predict_dask(X, centers, *, client: distributed.Client, chunk_rows: int = 50_000
                 ) -> np.ndarray:
    """Index of the nearest centre for every row, computed partition-wise.

    Args:
        X: (n, d) numpy array or dask array.
        centers: (k, d) centres.
        client: the Dask client whose cluster does the work.
        chunk_rows: rows per partition.

    Returns:
        (n,) int64 labels.

    Raises:
        ValueError: X or centers not 2-D, feature counts differ, NaN or infinity in either.
    """
    _check_positive(chunk_rows=chunk_rows)
    C = np.asarray(centers, dtype=np.float64)
    if C.ndim != 2 or len(C) == 0:
        raise ValueError(f"centers must be 2-D (n_clusters, n_features), got shape {C.shape}")
    if not np.isfinite(C).all():
        raise ValueError("centers contain NaN or infinity")
    X = _check_array(X)
    if X.shape[1] != C.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features but centers have {C.shape[1]}")
    blocks = _partition_rows(X, client, chunk_rows)
    out = client.gather(client.map(_predict_block, blocks, centers=_share(client, C)))
    n_bad = sum(bad for _, bad in out)
    if n_bad:
        raise ValueError(f"X contains NaN or infinity in {n_bad} rows")
    return np.concatenate([labels for labels, _ in out]) if out else np.empty(0, np.int64)


# --- partitions -------------------------------------------------------------------------------

def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} should be an integer >= 1")


def _seed_from(random_state) -> int:
    """One integer seed from which every random draw of a run is derived."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    return int(check_random_state(random_state).randint(2**31 - 1))


def _check_array(X):
    """X as a 2-D float32 numpy or dask array."""
    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        X = X.astype(np.float32)
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
        X = np.ascontiguousarray(X, dtype=np.float32)
    if X.shape[1] == 0:
        raise ValueError(f"X has no features, got shape {X.shape}")
    return X


def _partition_rows(X, client: distributed.Client, chunk_rows: int) -> list[distributed.Future]:
    """Row partitions of a checked 2-D float32 array as futures, in row order.

    numpy: split into blocks of ``chunk_rows`` rows, each put on the cluster (``_put``). dask:
    row chunks larger than ``chunk_rows`` are split, column chunks joined, then computed on the
    cluster.
    """
    if isinstance(X, da.Array):
        rows = X.chunks[0]
        if any(np.isnan(c) for c in rows):  # unknown lengths: keep the given row partitions
            X = X.rechunk({1: -1})
        elif X.numblocks[1] > 1 or max(rows, default=0) > chunk_rows:
            X = X.rechunk({0: min(chunk_rows, max(rows, default=1)), 1: -1})
        return client.compute(list(X.to_delayed()[:, 0]))
    return [_put(client, X[i:i + chunk_rows]) for i in range(0, len(X), chunk_rows)]


def _describe(client: distributed.Client, blocks: list[distributed.Future]) -> _Partitions:
    """Row counts and feature variance of the partitions; raises on NaN or infinity."""
    if not blocks:
        return _Partitions([], np.zeros(0, np.int64), 0.0)
    stats = client.gather(client.map(_describe_block, blocks))
    n_bad = sum(s[1] for s in stats)
    total = sum(s[0] for s in stats)
    if n_bad:
        raise ValueError(f"X contains NaN or infinity in {n_bad} of {total} rows")
    keep = [i for i, s in enumerate(stats) if s[0] > 0]
    if not keep:
        return _Partitions([], np.zeros(0, np.int64), 0.0)
    n, _, _, m2 = _merge_moments([stats[i] for i in keep])
    return _Partitions(blocks=[blocks[i] for i in keep],
                       sizes=np.array([stats[i][0] for i in keep], dtype=np.int64),
                       variance=float(np.mean(m2 / max(n, 1))))


def _describe_block(X: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(rows, rows with NaN/inf, per-feature mean, per-feature sum of squared deviations)."""
    n_bad = int((~np.isfinite(X).all(axis=1)).sum())
    if len(X) == 0 or n_bad:
        z = np.zeros(X.shape[1])
        return len(X), n_bad, z, z
    mean = X.mean(axis=0, dtype=np.float64)
    m2 = X.var(axis=0, dtype=np.float64) * len(X)
    return len(X), 0, mean, m2


def _merge_moments(stats):
    """Combine (n, bad, mean, m2) tuples (Chan et al.'s parallel variance)."""
    n, bad, mean, m2 = stats[0]
    for nb, badb, meanb, m2b in stats[1:]:
        tot = n + nb
        delta = meanb - mean
        mean = mean + delta * nb / tot
        m2 = m2 + m2b + delta**2 * n * nb / tot
        n, bad = tot, bad + badb
    return n, bad, mean, m2


def _share(client: distributed.Client, obj):
    """A task argument: large ones are put on the cluster once and sent to each worker once."""
    nbytes = sum(a.nbytes for a in obj) if isinstance(obj, list) else obj.nbytes
    if nbytes <= _INLINE_BYTES:
        return obj
    return _put(client, obj)


def _put(client: distributed.Client, obj) -> distributed.Future:
    """``obj`` on the cluster as the result of a task that holds it, one message per call.

    Not ``client.scatter``: scattered data lost with a dead worker cannot be recomputed (the
    run fails with ``FutureCancelledError``), while the scheduler keeps this task and reruns it
    on another worker. The price is a copy of ``obj`` kept by the scheduler.
    """
    return client.submit(_identity, obj, pure=False)


def _identity(obj):
    return obj


def _tree_reduce(client: distributed.Client, futures, combine, **kwargs):
    """Combine partition summaries ``_FANIN`` at a time on the cluster, the last few here."""
    while len(futures) > _FANIN:
        futures = [client.submit(combine, *futures[i:i + _FANIN], **kwargs)
                   for i in range(0, len(futures), _FANIN)]
    return combine(*client.gather(futures), **kwargs)


def _fetch_rows(client: distributed.Client, parts: _Partitions, idx: np.ndarray) -> np.ndarray:
    """Rows at global indices ``idx`` as (len(idx), d) float64."""
    owner = np.searchsorted(parts.offsets, idx, side="right") - 1
    groups = np.unique(owner)
    futs = [client.submit(_take_rows, parts.blocks[p], idx[owner == p] - parts.offsets[p])
            for p in groups]
    rows = client.gather(futs)
    out = np.empty((len(idx), rows[0].shape[1]))
    for p, r in zip(groups, rows):
        out[owner == p] = r
    return out


def _take_rows(X: np.ndarray, local: np.ndarray) -> np.ndarray:
    return X[local].astype(np.float64)


# --- distances (inputs checked by the public functions) -----------------------------------------

def _partial_distances(X: np.ndarray, C: np.ndarray):
    """Yield (start, xb, x2, D) over sub-blocks of rows (inputs checked).

    xb = X[start:start+b] as float64, x2 (b,) its squared norms, and D (m, b) =
    ||c||² - 2 c·x for the centres C (m, d): the squared distance less ||x||², which does not
    change the nearest centre, so it is added only to the minimum. Sub-blocks hold about
    ``_BLOCK_ELEMS`` distances, small enough to stay in cache (at least 32 rows, so that many
    centres do not turn this into a Python loop over single rows).
    """
    C2 = -2.0 * C
    c2 = np.einsum("ij,ij->i", C, C)[:, None]
    step = max(32, _BLOCK_ELEMS // max(len(C), 1))
    for start in range(0, len(X), step):
        xb = X[start:start + step].astype(np.float64)
        D = C2 @ xb.T
        D += c2
        yield start, xb, np.einsum("ij,ij->i", xb, xb), D


def _estep(X: np.ndarray, centers: np.ndarray, with_sums: bool = True):
    """Nearest centre of every row, for each restart at once.

    Args:
        X: (n, d) float32 partition.
        centers: (R, k, d) float64.

    Returns:
        labels (R, n) int64, squared distances (R, n) float64, per-centre sums (R, k, d) or None.
    """
    R, k, d = centers.shape
    n = len(X)
    labels = np.empty((R, n), np.int64)
    d2 = np.empty((R, n))
    sums = np.zeros((R * k, d)) if with_sums else None
    first = (np.arange(R) * k)[:, None]
    for start, xb, x2, D in _partial_distances(X, centers.reshape(R * k, d)):
        b = len(xb)
        lb = D.reshape(R, k, b).argmin(axis=1)  # (R, b)
        flat = lb + first
        best = np.take_along_axis(D, flat, axis=0)
        best += x2
        np.maximum(best, 0.0, out=best)  # rounding can make tiny distances negative
        labels[:, start:start + b] = lb
        d2[:, start:start + b] = best
        if sums is not None:
            # Reuse D as the one-hot assignment matrix: sums via one matrix product.
            D.fill(0.0)
            D[flat, np.arange(b)] = 1.0
            sums += D @ xb
    return labels, d2, None if sums is None else sums.reshape(R, k, d)


@one_blas_thread
def _predict_block(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, int]:
    n_bad = int((~np.isfinite(X).all(axis=1)).sum())
    labels, _, _ = _estep(X, centers[None], with_sums=False)
    return labels[0], n_bad


# --- k-means|| seeding (Bahmani et al. 2012) ------------------------------------------------------

def _init_kmeans_parallel(client, parts: _Partitions, k: int, R: int, oversampling: float,
                          rounds: int, seed: int) -> np.ndarray:
    """(R, k, d) float64 starting centres, one k-means|| seeding per restart."""
    rng = np.random.default_rng(seed)
    n, P = parts.n_samples, len(parts.blocks)
    first = _fetch_rows(client, parts, rng.integers(n, size=R))
    new = [first[r:r + 1] for r in range(R)]
    cands = [[c] for c in new]
    l = oversampling * k
    mind2 = [None] * P  # per-partition (n_p, R) distance to the candidates, kept on the workers
    for t in range(rounds):
        mind2 = client.map(_seed_min_d2, parts.blocks, mind2, new=_share(client, new))
        phi = _tree_reduce(client, client.map(_column_sums, mind2), _add)
        sampled = client.gather(client.map(_seed_sample, parts.blocks, mind2, list(range(P)),
                                           phi=phi, l=l, seed=seed, round_=t))
        new = [np.concatenate([s[r] for s in sampled]) for r in range(R)]
        for r in range(R):
            cands[r].append(new[r])
    del mind2
    C = [np.concatenate(c) for c in cands]
    for r in range(R):  # tiny or duplicate-heavy data can yield fewer than k candidates
        if len(C[r]) < k:
            extra = rng.choice(n, size=k - len(C[r]), replace=False)
            C[r] = np.concatenate([C[r], _fetch_rows(client, parts, np.sort(extra))])
    weights = _tree_reduce(client, client.map(_seed_weights, parts.blocks,
                                              cands=_share(client, C)), _add_lists)
    centers = np.empty((R, k, C[0].shape[1]))
    for r, local_seed in enumerate(rng.integers(2**31 - 1, size=R)):
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=int(local_seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # duplicate candidates
            centers[r] = km.fit(C[r], sample_weight=weights[r]).cluster_centers_
    return centers


@one_blas_thread
def _seed_min_d2(X: np.ndarray, prev: np.ndarray | None, new: list[np.ndarray]) -> np.ndarray:
    """(n, R) squared distance to the nearest candidate, updated with restart r's new ones."""
    R = len(new)
    out = np.full((len(X), R), np.inf) if prev is None else prev.copy()
    sizes = [len(c) for c in new]
    if not sum(sizes):
        return out
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for start, xb, x2, D in _partial_distances(X, np.concatenate(new)):
        rows = out[start:start + len(xb)]
        for r in range(R):
            if sizes[r]:
                d2 = np.maximum(D[bounds[r]:bounds[r + 1]].min(axis=0) + x2, 0.0)
                np.minimum(rows[:, r], d2, out=rows[:, r])
    return out


def _seed_sample(X: np.ndarray, mind2: np.ndarray, p: int, phi: np.ndarray, l: float,
                 seed: int, round_: int) -> list[np.ndarray]:
    """Per restart, rows kept with probability min(1, l * d2 / phi) (float64 rows)."""
    u = np.random.default_rng([seed, p, round_]).random(mind2.shape)
    safe = np.where(phi > 0, phi, np.inf)  # phi == 0: every row is a candidate already
    keep = u < l * mind2 / safe
    return [X[keep[:, r]].astype(np.float64) for r in range(mind2.shape[1])]


@one_blas_thread
def _seed_weights(X: np.ndarray, cands: list[np.ndarray]) -> list[np.ndarray]:
    """Per restart, how many rows of the partition are nearest to each candidate."""
    sizes = [len(c) for c in cands]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    counts = [np.zeros(m, np.int64) for m in sizes]
    for _, _, _, D in _partial_distances(X, np.concatenate(cands)):
        for r, m in enumerate(sizes):
            counts[r] += np.bincount(D[bounds[r]:bounds[r + 1]].argmin(axis=0), minlength=m)
    return counts


def _column_sums(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=0)


def _add(*parts):
    return sum(parts[1:], parts[0])


def _add_lists(*parts):
    return [sum(xs[1:], xs[0]) for xs in zip(*parts)]


# --- Lloyd iterations, all restarts in one pass --------------------------------------------

def _lloyd(client, parts: _Partitions, centers: np.ndarray, max_iter: int, tol_abs: float):
    """Run Lloyd's algorithm for every restart until each converges or hits ``max_iter``.

    Returns:
        final centres (R, k, d), inertia of each restart at its final centres (R,), and the
        number of iterations of each (R,).
    """
    R, k, _ = centers.shape
    centers = centers.copy()
    inertia = np.full(R, np.nan)
    n_iter = np.zeros(R, np.int64)
    # 0: iterating; 1: converged, one more pass to measure inertia at the final centres; 2: done
    state = np.zeros(R, np.int8)
    passes = 0
    while (live := np.flatnonzero(state < 2)).size:
        passes += 1
        if passes == 1 or passes % 10 == 0:
            _log.info("k-means pass %d: %d of %d restarts still iterating", passes, live.size, R)
        futs = client.map(_lloyd_block, parts.blocks, centers=_share(client, centers[live]),
                          n_far=k)
        sums, counts, inert, far = _tree_reduce(client, futs, _add_lloyd, n_far=k)
        for i, r in enumerate(live):
            if state[r] == 1:
                inertia[r], state[r] = inert[i], 2
                continue
            new = _update_centers(centers[r], sums[i], counts[i], *(f[i] for f in far))
            n_iter[r] += 1
            shift = float(((new - centers[r]) ** 2).sum())
            centers[r] = new
            if shift == 0.0:  # same centres, same assignment: this pass's inertia is final
                inertia[r], state[r] = inert[i], 2
            elif shift <= tol_abs or n_iter[r] >= max_iter:
                state[r] = 1
    return centers, inertia, n_iter


@one_blas_thread
def _lloyd_block(X: np.ndarray, centers: np.ndarray, n_far: int):
    """One E-step on a partition for R restarts.

    Returns:
        sums (R, k, d), counts (R, k), inertia (R,), and the ``n_far`` rows farthest from their
        centre per restart as (d2 (R, m), labels (R, m), rows (R, m, d)) for empty-cluster repair.
    """
    labels, d2, sums = _estep(X, centers)
    R, k, _ = centers.shape
    counts = np.stack([np.bincount(labels[r], minlength=k) for r in range(R)])
    m = min(n_far, len(X))
    far = np.argpartition(d2, len(X) - m, axis=1)[:, len(X) - m:]  # (R, m) row indices
    far_d2 = np.take_along_axis(d2, far, axis=1)
    far_labels = np.take_along_axis(labels, far, axis=1)
    far_rows = X[far].astype(np.float64)
    return sums, counts, d2.sum(axis=1), (far_d2, far_labels, far_rows)


def _add_lloyd(*parts, n_far: int):
    sums = _add(*(p[0] for p in parts))
    counts = _add(*(p[1] for p in parts))
    inertia = _add(*(p[2] for p in parts))
    far_d2 = np.concatenate([p[3][0] for p in parts], axis=1)
    far_labels = np.concatenate([p[3][1] for p in parts], axis=1)
    far_rows = np.concatenate([p[3][2] for p in parts], axis=1)
    top = np.argsort(-far_d2, axis=1, kind="stable")[:, :n_far]
    far = (np.take_along_axis(far_d2, top, axis=1), np.take_along_axis(far_labels, top, axis=1),
           np.take_along_axis(far_rows, top[:, :, None], axis=1))
    return sums, counts, inertia, far


def _update_centers(old: np.ndarray, sums: np.ndarray, counts: np.ndarray, far_d2: np.ndarray,
                    far_labels: np.ndarray, far_rows: np.ndarray) -> np.ndarray:
    """New (k, d) centres; an empty cluster takes the row farthest from its centre (sklearn)."""
    sums, counts = sums.copy(), counts.astype(np.float64)
    empty = np.flatnonzero(counts == 0)
    for e, i in zip(empty, np.argsort(-far_d2, kind="stable")):
        j = far_labels[i]
        sums[j] -= far_rows[i]
        counts[j] -= 1
        sums[e], counts[e] = far_rows[i], 1
    new = old.copy()
    filled = counts > 0
    new[filled] = sums[filled] / counts[filled, None]
    return new
