"""Choosing k: a sweep over candidate cluster counts with the pipeline's own initialisation.

For each candidate k, on the training sample the nightly would use, the sweep reports the
silhouette, the stability across seeds (mean pairwise ARI between restarts with different
seeds) and, where the source has a label column, ACC and NMI; then it recommends a k by a fixed
rule that never reads the labels.

Why a proxy instead of DEC per k
    The autoencoder pretraining does not depend on k (``DeepEmbeddedClustering.pretrain`` never
    reads ``n_clusters``), and DEC fine-tuning starts from the initialisation's partition of the
    pretrained embedding z: with the default ``model.init="manifold"`` the Gaussian-mixture
    posteriors on a UMAP view of z are the fine-tuning targets (``train.anchor_updates``, by
    default all of them), and DEC's own target would only sharpen that partition (p squares
    q and renormalises, so rows move toward the centroid they already lean to) rather than
    choose how many groups there are. So the sweep pretrains once and, per k and seed,
    runs an initialisation alone: k-means on the view refined by a full-covariance Gaussian
    mixture started from its centres (one of the candidates the nightly's
    ``engine.centroids.init_centroids`` draws in each of its ``model.init_views`` views, with
    scikit-learn's KMeans on the in-memory sample where the nightly runs the same Lloyd
    k-means over Dask), or plain k-means on z for ``init="k-means"``. The nightly also fits
    restarted mixtures in 5 views and keeps the highest silhouette; the sweep does not, so its
    stability is that of the k-means-started candidate alone, the less reliable one on digits
    (0.82-0.85 ACC on two embeddings where the restarts reached 0.95).
    A k whose initial partition is unstable or poorly separated does not turn into a good k
    during fine-tuning.

One UMAP view per seed, at a fixed dimension
    The pipeline computes its view with ``n_components=k``. The sweep computes one view per seed
    with ``view_components`` (10) dimensions and clusters it for every k. Measured on the digits
    demo (1,797 rows, k=4..16, 3 seeds, one embedding, a busy 2-core machine): a view per k and
    seed is 39 UMAP fits, 299 s of UMAP and 337 s for the sweep; a view per seed is 3 fits,
    73 s of UMAP (most of it numba's first compilation) and 152 s for the sweep. Both gave the
    same picture: stability 0.999 at k=10 against at most 0.946 (per seed) and 0.941 (per k)
    elsewhere, silhouette in the view highest at k=10. A shared view also makes the silhouettes
    of different k comparable: they are measured in one space.

Silhouette in the view, not in z
    The initialisation draws its clusters in the view (UMAP with ``min_dist=0`` pulls each dense
    region into a tight clump), so separation is measured there. In z the digits demo is flat
    from k=10 to k=14 (0.153..0.158, highest at k=14); in the view it peaks at k=10 (0.805,
    next 0.789 at k=13). ``silhouette_z`` is reported beside it. With ``init="k-means"`` z is the
    clustered space and the two columns are the same measure.

Recommendation rule (``recommend_k``)
    Among the k whose seed stability is at least ``min_stability`` (0.8), take the highest
    silhouette; any k within ``silhouette_tol`` (0.01) of it is a tie, and the smallest tied k
    wins. No stable k: no recommendation, and the reason says which k came closest. Labels are
    only reported, never read by the rule.
"""

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations

import numpy as np

from decflow import progress as shown_progress
from decflow.model.initialization import INIT_CHOICES
from decflow.model.metrics import ari, cluster_size_summary, silhouette_sample, supervised_scores

_INT = re.compile(r"[+-]?\d+")
_FORMS = "expected 'A..B', 'A..B..STEP' or 'A,B,C' with integers k >= 2"
_log = logging.getLogger(__name__)


def parse_k_range(text: str) -> list[int]:
    """Candidate k from ``"4..16"`` (both ends included), ``"4..16..2"`` (a step) or ``"4,6,8"``.

    Returns:
        The distinct k, ascending.

    Raises:
        ValueError: naming ``text``: empty, not one of these forms, a step < 1, a reversed
            range, or a k < 2.
    """
    s = text.strip() if isinstance(text, str) else ""
    if not s:
        raise ValueError(f"k range {text!r} is empty: {_FORMS}")
    if ".." in s:
        parts = [p.strip() for p in s.split("..")]
        if len(parts) > 3 or not all(_INT.fullmatch(p) for p in parts):
            raise ValueError(f"k range {text!r} is not a range: {_FORMS}")
        lo, hi = int(parts[0]), int(parts[1])
        step = int(parts[2]) if len(parts) == 3 else 1
        if step < 1:
            raise ValueError(f"k range {text!r} has step {step}: the step must be >= 1")
        if hi < lo:
            raise ValueError(f"k range {text!r} is reversed ({lo} > {hi}): write {hi}..{lo}")
        ks = list(range(lo, hi + 1, step))
    else:
        parts = [p.strip() for p in s.split(",")]
        if not all(_INT.fullmatch(p) for p in parts):
            raise ValueError(f"k range {text!r} is not a list of integers: {_FORMS}")
        ks = sorted({int(p) for p in parts})
    if ks[0] < 2:
        raise ValueError(f"k range {text!r} holds k={ks[0]}: every k must be >= 2")
    return ks


@dataclass(frozen=True)
class SweepRow:
    """One candidate k; every number is a mean over the seeds except ``stability``."""

    k: int
    silhouette: float  # in the space the initialisation clusters (SweepResult.space)
    silhouette_z: float  # in the embedding z
    stability: float  # mean pairwise ARI between the seeds' labelings
    smallest_share: float  # share of rows in the smallest of the k clusters (empty ones count)
    acc: float | None = None  # with labels only
    nmi: float | None = None


@dataclass(frozen=True)
class SweepResult:
    """The table of a sweep, its recommendation and how it was made."""

    rows: list[SweepRow]
    recommended: int | None
    reason: str  # one sentence naming the numbers that decided
    init: str
    space: str  # where ``silhouette`` was measured
    seeds: list[int]
    n_rows: int  # rows clustered
    min_stability: float
    silhouette_tol: float
    has_labels: bool
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    context: dict = field(default_factory=dict)  # data window and pretraining (run_sweep)

    def to_frame(self):
        """One row per k: ``k``, ``silhouette``, ``silhouette_z``, ``stability``,
        ``smallest_share`` and, with labels, ``acc`` and ``nmi``."""
        import pandas as pd

        frame = pd.DataFrame([asdict(r) for r in self.rows])
        return frame if self.has_labels else frame.drop(columns=["acc", "nmi"])

    def to_dict(self) -> dict:
        """JSON-ready (NaN as null)."""
        rows = [{k: _finite(v) for k, v in r.items()} for r in self.to_frame().to_dict("records")]
        return {"recommended": self.recommended, "reason": self.reason,
                "rule": {"min_stability": self.min_stability,
                         "silhouette_tol": self.silhouette_tol, "text": rule_text(self)},
                "init": self.init, "silhouette_space": self.space, "seeds": self.seeds,
                "n_rows": self.n_rows, "rows": rows,
                "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "context": self.context}

    def to_markdown(self) -> str:
        """A heading with the recommendation, its reason, the table (recommended row in bold)
        and the rule."""
        head = (f"recommended k = {self.recommended}" if self.recommended is not None
                else "no k recommended")
        cols = [("k", "k"), ("silhouette", f"silhouette ({self.space})"),
                ("silhouette_z", "silhouette (z)"), ("stability", "stability (ARI)"),
                ("smallest_share", "smallest cluster share")]
        if self.has_labels:
            cols += [("acc", "ACC"), ("nmi", "NMI")]
        lines = [f"## k sweep: {head}", "", self.reason, "",
                 "| " + " | ".join(t for _, t in cols) + " |",
                 "|" + "---|" * len(cols)]
        for r in self.rows:
            cells = [str(r.k)] + [_fmt(getattr(r, c)) for c, _ in cols[1:]]
            if r.k == self.recommended:
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        labels = (" ACC and NMI use the label column and are reported only."
                  if self.has_labels else "")
        lines += ["", f"Rule: {rule_text(self)}{labels} {self.n_rows} rows, init "
                      f"{self.init!r}, seeds {', '.join(map(str, self.seeds))}."]
        return "\n".join(lines) + "\n"

    def plot(self):
        """Silhouette, stability (with its threshold) and, with labels, ACC/NMI against k; the
        recommended k is a vertical line labelled ``recommended k=<k>`` on every panel.

        Returns:
            ``matplotlib.figure.Figure``.
        """
        from matplotlib.figure import Figure

        ks = [r.k for r in self.rows]
        panels = 3 if self.has_labels else 2
        fig = Figure(figsize=(4.6 * panels, 3.8), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
        axes[0].plot(ks, [r.silhouette for r in self.rows], marker="o",
                     label=f"in the {self.space}")
        if self.space != "embedding z":
            axes[0].plot(ks, [r.silhouette_z for r in self.rows], marker=".", linestyle="--",
                         label="in the embedding z")
        shaky = [r for r in self.rows if not r.stability >= self.min_stability]
        if shaky:
            axes[0].scatter([r.k for r in shaky], [r.silhouette for r in shaky], marker="x",
                            color="tab:red", zorder=3, label="stability below threshold")
        axes[0].set_title("silhouette (higher: better separated)")
        axes[1].plot(ks, [r.stability for r in self.rows], marker="o", color="tab:green",
                     label="mean pairwise ARI")
        axes[1].axhline(self.min_stability, color="tab:red", linestyle=":",
                        label=f"threshold {self.min_stability:g}")
        axes[1].set_title(f"stability across {len(self.seeds)} seeds")
        if self.has_labels:
            axes[2].plot(ks, [r.acc for r in self.rows], marker="o", label="ACC")
            axes[2].plot(ks, [r.nmi for r in self.rows], marker="s", label="NMI")
            axes[2].set_title("against the label column (not used to choose)")
        for ax in axes:
            if self.recommended is not None:
                ax.axvline(self.recommended, color="black", linestyle="--", alpha=0.7,
                           label=f"recommended k={self.recommended}")
            ax.set_xlabel("k")
            ax.set_xticks(ks)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.suptitle(f"k sweep on {self.n_rows} rows: " + (
            f"recommended k={self.recommended}" if self.recommended is not None
            else "no k recommended"))
        return fig


def rule_text(result: SweepResult) -> str:
    """The recommendation rule of ``result`` in words."""
    return (f"among the k whose seed stability (mean pairwise ARI) is >= "
            f"{result.min_stability:g}, the highest silhouette in the {result.space}; k within "
            f"{result.silhouette_tol:g} of it tie, and the smallest tied k wins.")


def recommend_k(rows: Sequence[SweepRow], *, min_stability: float = 0.8,
                silhouette_tol: float = 0.01, space: str = "clustered space"
                ) -> tuple[int | None, str]:
    """The rule: among k with ``stability >= min_stability``, the highest silhouette, ties
    (within ``silhouette_tol``) to the smallest k. Never reads ``acc``/``nmi``.

    Returns:
        (recommended k or None, one sentence naming the numbers that decided).
    """
    if not rows:
        raise ValueError("rows is empty: nothing to recommend from")
    stable = [r for r in rows if r.stability >= min_stability and math.isfinite(r.silhouette)]
    if not stable:
        top = max(rows, key=lambda r: (_num(r.stability), -r.k))
        return None, (f"No k recommended: no k reached seed stability (mean pairwise ARI) "
                      f">= {min_stability:g}; the most stable was k={top.k} at "
                      f"{_fmt(top.stability)}, so every partition depends on the seed. Try "
                      f"another range, more pretraining or other features.")
    best = max(stable, key=lambda r: (r.silhouette, -r.k))
    pick = min((r for r in stable if r.silhouette >= best.silhouette - silhouette_tol),
               key=lambda r: r.k)
    which = f"{len(stable)} of {len(rows)} k" if len(stable) > 1 else "the only k"
    if pick is best:
        others = [r for r in stable if r is not best]
        runner = (f"; next best k={max(others, key=lambda r: r.silhouette).k} at "
                  f"{_fmt(max(r.silhouette for r in others))}" if others else "")
        return pick.k, (f"k={pick.k}: highest silhouette in the {space} ({_fmt(pick.silhouette)}"
                        f"{runner}) among {which} with seed stability >= {min_stability:g} "
                        f"(k={pick.k}: {_fmt(pick.stability)}).")
    return pick.k, (f"k={pick.k}: silhouette in the {space} {_fmt(pick.silhouette)} is within "
                    f"{silhouette_tol:g} of the highest ({_fmt(best.silhouette)} at k={best.k}), "
                    f"so the smaller k wins, among {which} with seed stability >= "
                    f"{min_stability:g} (k={pick.k}: {_fmt(pick.stability)}).")


def sweep_k(Z, ks: Sequence[int], *, init: str = "manifold", seeds: int = 3, y=None,
            random_state: int = 0, n_init: int = 10, sample_size: int = 3000,
            view_components: int = 10, min_stability: float = 0.8, silhouette_tol: float = 0.01,
            progress: Callable[[str], None] | None = None) -> SweepResult:
    """Run the initialisation for every k and seed on an embedding, score it, recommend a k.

    Args:
        Z: (n, d) embedding (the pretrained encoder's output).
        ks: candidate k, each in 2..n-1.
        init: "manifold" (k-means + Gaussian mixture on a UMAP view of Z) or "k-means" (on Z).
        seeds: restarts per k, with seeds ``random_state .. random_state + seeds - 1`` (>= 2).
        y: optional (n,) labels; adds ACC and NMI (rows with a missing label left out).
        n_init: k-means restarts inside each initialisation (``kmeans.n_init``).
        sample_size: rows (at most) for the silhouettes; the same rows for every k and seed.
        view_components: dimensions of the UMAP view (one per seed, shared by every k).
        progress: called with a line per phase and per k.

    Returns:
        ``SweepResult`` with one ``SweepRow`` per k, ascending.
    """
    Z = np.asarray(Z, dtype=np.float32)
    if Z.ndim != 2 or len(Z) < 3 or not np.isfinite(Z).all():
        raise ValueError(f"Z must be a finite (n_samples >= 3, n_components) array, got shape "
                         f"{Z.shape}")
    n = len(Z)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 2 or ks[-1] > n - 1:
        raise ValueError(f"ks={ks} must be non-empty, each k in 2..n_samples-1={n - 1}")
    if init not in INIT_CHOICES:
        raise ValueError(f"init={init!r} must be one of {INIT_CHOICES}")
    if seeds < 2:
        raise ValueError(f"seeds={seeds} must be >= 2: stability compares restarts")
    if not 0 <= min_stability <= 1:
        raise ValueError(f"min_stability={min_stability} must be in [0, 1]")
    labels = _check_labels(y, n)
    say = progress or _log.info
    seed_values = [random_state + i for i in range(seeds)]
    timings = {}

    t0 = time.perf_counter()
    if init == "manifold":
        from decflow.model.initialization import manifold_view

        say(f"UMAP views of {n} rows ({view_components}-d, seeds {seed_values})")
        spaces = [manifold_view(Z, view_components, s) for s in seed_values]
        space = f"{view_components}-d UMAP view"
    else:
        spaces, space = [Z] * seeds, "embedding z"
    timings["views"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = []
    shown = shown_progress.begin("sweep-k", len(ks), "k")
    for k in ks:
        parts = [_partition(M, Z, k, s, init, n_init) for M, s in zip(spaces, seed_values)]
        rows.append(_score(k, parts, spaces, Z, labels, sample_size, random_state))
        r = rows[-1]
        say(f"k={k}: silhouette {_fmt(r.silhouette)}, stability {_fmt(r.stability)}")
        shown.advance(1)
    shown.end()
    timings["sweep"] = time.perf_counter() - t0
    recommended, reason = recommend_k(rows, min_stability=min_stability,
                                      silhouette_tol=silhouette_tol, space=space)
    return SweepResult(rows=rows, recommended=recommended, reason=reason, init=init,
                       space=space, seeds=seed_values, n_rows=n, min_stability=min_stability,
                       silhouette_tol=silhouette_tol, has_labels=labels is not None,
                       timings=timings)


def run_sweep(config, ks: Sequence[int], *, run_date=None, seeds: int = 3,
              pretrain_epochs: int | None = None,
              progress: Callable[[str], None] | None = None) -> SweepResult:
    """The nightly's training sample, embedded and pretrained once, then ``sweep_k``.

    Reads the window of ``config.source`` ending at ``run_date`` (default: the newest
    partition present), samples at most ``train.max_train_rows`` rows as the nightly does,
    fits the feature encoder, pretrains the autoencoder from scratch (no warm start) with the
    config's settings, and sweeps with ``model.init``, ``kmeans.n_init`` and
    ``train.random_state``.

    Args:
        config: ``decflow.config.PipelineConfig``.
        pretrain_epochs: override the config's pretraining: faster, but a different embedding
            from the one the nightly learns, and possibly a different answer (on the digits
            demo 100 epochs instead of 500 take 58 s instead of 200 s and recommend k=11, not
            10: benchmarks/results/sweep_k_demo*.md).

    Raises:
        DataError: the source has no partitions, or the window holds no rows.
    """
    from decflow.data import partitioned, sources
    from decflow.errors import DataError
    from decflow.model.building import pretrain_from_config
    from decflow.model.features import FeatureEncoder
    from decflow.redaction import redact

    say = progress or _log.info
    src, t = config.source, config.train
    t0 = time.perf_counter()
    if run_date is None:
        days = partitioned.list_partitions(src.uri, src.date_column)
        if not days:
            raise DataError(f"no {src.date_column}=YYYY-MM-DD partitions in {redact(src.uri)}: "
                            f"nothing to sweep on")
        run_date = days[-1]
    run_date = partitioned.parse_date(run_date)
    scan = sources.scan_window(src, run_date)
    sources.check_window_days(scan, config.validation.min_window_days)
    span = f"{partitioned.window_dates(run_date, src.window_days)[0]}..{run_date}"
    if scan.n_rows == 0:
        raise DataError(f"the window {span} of {redact(src.uri)} holds no rows "
                        f"(partitions found: {scan.lineage.partitions or 'none'}): nothing to "
                        f"sweep on")
    frame = sources.training_sample(scan, config)
    encoder = FeatureEncoder(config.features)
    X = encoder.fit_transform(frame)
    y = frame[src.label_column].to_numpy() if src.label_column in frame else None
    timings = {"load": time.perf_counter() - t0}

    say(f"pretraining the autoencoder on {len(X)} rows x {X.shape[1]} features"
        + (f" ({pretrain_epochs} epochs)" if pretrain_epochs is not None else ""))
    est = pretrain_from_config(config, X, epochs=pretrain_epochs)
    timings["pretrain"] = est.timings_["pretrain"]
    # the views of the space the nightly run would draw its clusters in (model.view_space)
    S, space = (est.view_data(X) if config.model.init == "manifold" else
                (est.transform(X, training=True), "embedding"))
    say(f"views of the {'scaled input' if space == 'input' else 'embedding z'} "
        f"(effective input dimension {est.input_dimension_:.1f})"
        if config.model.init == "manifold" else "k-means on the embedding z")
    result = sweep_k(S, ks, init=config.model.init, seeds=seeds, y=y,
                     random_state=t.random_state or 0, n_init=config.kmeans.n_init,
                     progress=progress)
    timings.update(result.timings)
    timings["total"] = time.perf_counter() - t0
    context = {"source_uri": redact(src.uri), "run_date": run_date.isoformat(),
               "window": span, "partitions": scan.lineage.partitions,
               "window_rows": scan.n_rows, "sample_rows": len(frame),
               "label_column": src.label_column if y is not None else None,
               "pretrain_epochs": len(est.history_["pretrain_loss"]),
               "pretrain_epochs_overridden": pretrain_epochs is not None,
               "view_space": space,
               "configured_k": config.model.n_clusters}
    return replace(result, timings=timings, context=context)


# ------------------------------------------------------------------------ helpers
def _partition(M: np.ndarray, Z: np.ndarray, k: int, seed: int, init: str, n_init: int
               ) -> np.ndarray:
    """(n,) labels of one initialisation (inputs checked by sweep_k)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(M)
    if init == "k-means":
        return km.labels_
    from decflow.model.initialization import gmm_refine

    _, resp = gmm_refine(M, Z, k, means_init=km.cluster_centers_, random_state=seed)
    return resp.argmax(axis=1)


def _score(k, parts, spaces, Z, labels, sample_size, random_state) -> SweepRow:
    """Means over the seeds' partitions (inputs checked by sweep_k)."""
    sil = [silhouette_sample(M, p, sample_size, random_state) for M, p in zip(spaces, parts)]
    sil_z = [silhouette_sample(Z, p, sample_size, random_state) for p in parts]
    stability = float(np.mean([ari(a, b) for a, b in combinations(parts, 2)]))
    share = float(np.mean([cluster_size_summary(p, k)["min_share"] for p in parts]))
    acc = nmi = None
    if labels is not None:
        y, mask = labels
        scores = [supervised_scores(y, p[mask]) for p in parts]
        acc = float(np.mean([s["acc"] for s in scores]))
        nmi = float(np.mean([s["nmi"] for s in scores]))
    return SweepRow(k=k, silhouette=_nanmean(sil), silhouette_z=_nanmean(sil_z),
                    stability=stability, smallest_share=share, acc=acc, nmi=nmi)


def _check_labels(y, n: int):
    """(labels of the rows that have one, mask of those rows), or None without labels."""
    if y is None:
        return None
    import pandas as pd

    y = np.asarray(y, dtype=object).ravel()
    if len(y) != n:
        raise ValueError(f"y has {len(y)} rows, Z {n}")
    mask = pd.notna(y)
    if not mask.any():
        return None
    return y[mask].astype(str), mask  # one comparable type for mixed or object columns


def _nanmean(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _num(value) -> float:
    return value if value is not None and math.isfinite(value) else -math.inf


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.3f}"
