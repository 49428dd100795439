"""Cluster profiles: what each cluster *is*, in the words of the source columns.

One profile per cluster id ``0..k-1`` (empty clusters included, with size 0 and empty lists):

- ``size``, ``share``: rows in the cluster, and that count over all rows.
- ``mean_confidence``: mean of max_j q_ij over the cluster's rows (None when empty).
- ``numeric``: the numeric features that set the cluster apart from the rest, ranked by the
  standardised mean difference ``value = (mean_in - mean_out) / pooled std`` (Cohen's d):
  ``+2.1`` means the cluster's mean is 2.1 standard deviations above the mean of all other
  rows. Nulls and non-finite values are ignored; the pooled std is that of the two groups
  (cluster, rest) around their own means. A constant column scores 0; when both groups are
  constant but differ, the column's overall std is used instead. A feature is listed only when
  the difference is both material and clear: ``|value| >= MIN_EFFECT`` (0.2, Cohen's "small")
  and its two-sample statistic ``|value| * sqrt(n_in * n_out / n)`` at least ``MIN_Z`` (4), so
  that a column of noise, whose clusters differ by chance, is not named. Elements of a vector
  column count as numeric features named ``name[i]`` when
  the vector has at most ``MAX_VECTOR_ELEMENTS`` elements; longer vectors (pixels, embeddings)
  are skipped, as their single elements do not describe anything to a reader.
- ``categories``: over-represented values of each categorical column, ranked by
  ``lift = share_in / share_overall`` = P(value | cluster) / P(value); ``×3`` means the value is
  three times as common in the cluster as overall. Nulls count as the value ``"(null)"``. A value
  is listed only if its lift is above 1, it holds at least ``max(MIN_COUNT, MIN_SHARE x size)``
  of the cluster's rows, so that one stray row cannot give a huge lift, and its share in the
  cluster is ``MIN_Z`` standard errors above its share overall (binomial), so that the values
  of a random column are not named.
- ``terms``: terms of each text column that are more common in the cluster than in the rest
  (scikit-learn's ``CountVectorizer``: lower-case, ``\\b\\w\\w+\\b`` tokens, English stop words
  removed, the ``MAX_TERMS`` most frequent terms of the column kept; nothing downloaded).
  ``share_in`` / ``share_out`` are the fractions of the cluster's / other rows containing the
  term, ``score = share_in x ln(p_in / p_out)`` with the smoothed fractions
  ``p = (rows with the term + 0.5) / (rows + 1)``: high for terms that are both frequent in the
  cluster and rarer elsewhere. Same minimum count as categories; only positive scores listed,
  and only where the two shares differ by ``MIN_Z`` standard errors (two-proportion test).
- ``exemplars``: ids of the cluster's rows nearest its centroid in embedding space (smallest
  ``distance``), nearest first, ties in row order.

All values are JSON-safe Python scalars (NaN -> None).
"""

# Just over 500 lines: one measure per feature kind (numeric, categorical, text, vector
# elements), each with its significance filter, and the three renderings of the result.

import html
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from decflow.config import FeaturesConfig
from decflow.model.features import _as_strings, _documents, _numeric, _stack_vectors

MAX_VECTOR_ELEMENTS = 64  # longer vector columns are left out of the numeric ranking
MAX_TERMS = 20_000  # vocabulary cap per text column: bounds memory at (k, MAX_TERMS)
MIN_COUNT = 2  # a category / term needs at least this many rows of the cluster ...
MIN_SHARE = 0.01  # ... and at least this share of them
MIN_EFFECT = 0.2  # |standardised mean difference| a listed numeric feature needs
MIN_Z = 4.0  # standard errors a listed difference needs (numeric, category, term)
NULL_CATEGORY = "(null)"
_BLOCK = 32  # numeric columns summarised per pass: bounds memory at (n, _BLOCK) floats
_EPS = 1e-12


@dataclass
class ClusterProfiles:
    """Profiles of the ``n_clusters`` clusters of ``n_rows`` rows.

    Attributes:
        n_rows: rows profiled.
        n_clusters: k; ``clusters`` has one dict per id ``0..k-1``.
        clusters: per cluster: ``cluster_id``, ``size``, ``share``, ``mean_confidence``,
            ``numeric`` (``feature``, ``value``, ``mean_in``, ``mean_out``),
            ``categories`` (``column``, ``category``, ``share_in``, ``share_overall``, ``lift``,
            ``count``), ``terms`` (``column``, ``term``, ``share_in``, ``share_out``, ``score``,
            ``count``) and ``exemplars`` (ids). See the module docstring for the measures.
    """

    n_rows: int
    n_clusters: int
    clusters: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"n_rows": self.n_rows, "n_clusters": self.n_clusters, "clusters": self.clusters}

    @classmethod
    def from_dict(cls, data: dict) -> "ClusterProfiles":
        return cls(n_rows=data["n_rows"], n_clusters=data["n_clusters"],
                   clusters=list(data["clusters"]))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per cluster; the list columns as JSON text, so the frame writes to Parquet."""
        rows = [{"cluster_id": c["cluster_id"], "size": c["size"], "share": c["share"],
                 "mean_confidence": c["mean_confidence"],
                 **{key: json.dumps(c.get(key, []), ensure_ascii=False, allow_nan=False)
                    for key in ("numeric", "categories", "terms", "exemplars", "labels")}}
                for c in self.clusters]
        frame = pd.DataFrame(rows, columns=["cluster_id", "size", "share", "mean_confidence",
                                            "numeric", "categories", "terms", "exemplars",
                                            "labels"])
        return frame.astype({"cluster_id": "int64", "size": "int64", "share": "float64",
                             "mean_confidence": "float64"})

    def to_markdown(self, max_items: int = 5) -> str:
        """A Markdown table, one row per cluster (user text escaped: no HTML, no broken cells).

        Args:
            max_items: items shown per cell (features, categories, terms, exemplars).
        """
        header = self._header()
        lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * 4 + "---|" * (len(header) - 4)]
        for row in self._rows(max_items):
            lines.append("| " + " | ".join(_escape_markdown(cell) for cell in row) + " |")
        return "\n".join(lines) + "\n"

    def summary(self, n: int = 3) -> list[dict]:
        """One short row per cluster (the Prefect run's ``cluster-profiles`` table)."""
        def short(items, render, k=n):
            return ", ".join(render(item) for item in items[:k])
        return [{"cluster": c["cluster_id"], "size": c["size"], "share": round(c["share"], 4),
                 "mean confidence": (None if c["mean_confidence"] is None
                                     else round(c["mean_confidence"], 3)),
                 "sets it apart": short(c["numeric"],
                                        lambda f: f"{f['feature']} {f['value']:+.2f}σ"),
                 "over-represented": short(c["categories"], lambda g: f"{g['column']}="
                                           f"{g['category']} ×{g['lift']:.2g}"),
                 "top terms": short(c["terms"], lambda t: t["term"], 5),
                 "exemplar ids": ", ".join(str(e) for e in c["exemplars"]),
                 **({"most common label": label_text(c)} if c["labels"] else {})}
                for c in self.clusters]

    def to_html(self, max_items: int = 5) -> str:
        """The same table as a self-contained HTML fragment (escaped text, no scripts or assets)."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self._header())
        body = "\n".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
                         + "</tr>" for row in self._rows(max_items))
        return (f'<table class="decflow-cluster-profiles">\n<thead><tr>{head}</tr></thead>\n'
                f"<tbody>\n{body}\n</tbody>\n</table>\n")

    def _has_labels(self) -> bool:
        return any(c.get("labels") for c in self.clusters)

    def _header(self) -> tuple[str, ...]:
        return _HEADER + (("most common label",) if self._has_labels() else ())

    def _rows(self, max_items: int) -> list[list[str]]:
        """Plain-text cells per cluster, shared by ``to_markdown`` and ``to_html``."""
        text_columns = {t["column"] for c in self.clusters for t in c["terms"]}
        rows = []
        for c in self.clusters:
            truth = [label_text(c)] if self._has_labels() else []
            def term(t):
                return t["term"] if len(text_columns) < 2 else f"{t['column']}:{t['term']}"

            rows.append([
                str(c["cluster_id"]), str(c["size"]), _fmt(c["share"], ".1%"),
                _fmt(c["mean_confidence"], ".2f"),
                ", ".join(f"{f['feature']} {f['value']:+.1f}σ" for f in c["numeric"][:max_items]),
                ", ".join(f"{g['column']}={g['category']} ×{g['lift']:.1f}"
                          for g in sorted(c["categories"], key=lambda g: -g["lift"])[:max_items]),
                ", ".join(term(t)
                          for t in sorted(c["terms"], key=lambda t: -t["score"])[:max_items]),
                ", ".join(str(e) for e in c["exemplars"][:max_items]),
                *truth,
            ])
        return rows


def label_text(profile: dict, n: int = 3) -> str:
    """``"3 (97%), 8 (2%)"``: a profile's most common ground-truth values and their shares."""
    return ", ".join(f"{item['value']} ({item['share']:.0%})"
                     for item in profile.get("labels", [])[:n])


_HEADER = ("cluster", "size", "share", "mean confidence", "distinguishing features",
           "over-represented categories", "top terms", "exemplar ids")


def cluster_profiles(frame: pd.DataFrame, cluster_id: np.ndarray, confidence: np.ndarray,
                     distance: np.ndarray, features: FeaturesConfig, id_column: str,
                     n_clusters: int, *, top_features: int = 5, top_categories: int = 3,
                     top_terms: int = 5, n_exemplars: int = 5,
                     label_column: str | None = None, top_labels: int = 3) -> ClusterProfiles:
    """Describe each cluster by the source columns of its rows (measures: module docstring).

    Args:
        frame: (n rows) the feature columns of ``features`` and ``id_column``.
        cluster_id: (n,) assigned cluster per row, in ``0..n_clusters-1``.
        confidence: (n,) max_j q_ij per row.
        distance: (n,) distance of each row to its assigned centroid in embedding space.
        features: the feature columns by kind.
        id_column: column whose values name the exemplars.
        n_clusters: k; every id ``0..k-1`` gets a profile, empty ones too.
        top_features: numeric features listed per cluster.
        top_categories: over-represented values listed per categorical column and cluster.
        top_terms: terms listed per text column and cluster.
        n_exemplars: exemplar ids per cluster.
        label_column: the ground-truth column (``source.label_column``), if any: each profile
            then lists its most common values with their share of the cluster (``labels``;
            empty without one). Reported only, never used to cluster.
        top_labels: label values listed per cluster.

    Returns:
        ``ClusterProfiles`` with one profile per cluster id, in id order.

    Raises:
        ValueError: no rows, missing columns, arrays of another length than ``frame``,
            cluster ids outside ``0..n_clusters-1``, negative counts, or non-numeric values in
            a numeric or vector column.
    """
    labels, confidence, distance = _check_inputs(frame, cluster_id, confidence, distance,
                                                 features, id_column, n_clusters,
                                                 top_features=top_features,
                                                 top_categories=top_categories,
                                                 top_terms=top_terms, n_exemplars=n_exemplars)
    n, k = len(frame), n_clusters
    from scipy import sparse

    member = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    sizes = np.bincount(labels, minlength=k)
    min_count = np.maximum(MIN_COUNT, np.ceil(MIN_SHARE * sizes))

    finite = np.isfinite(confidence)
    conf_sum = np.bincount(labels[finite], weights=confidence[finite], minlength=k)
    conf_n = np.bincount(labels[finite], minlength=k)

    numeric = _numeric_profiles(frame, features, labels, member, top_features)
    categories = _category_profiles(frame, features.categorical, labels, sizes, min_count,
                                    top_categories)
    terms = _term_profiles(frame, features.text, member, sizes, min_count, top_terms)
    exemplars = _exemplars(frame[id_column], labels, distance, k, n_exemplars)
    truth = _label_profiles(frame, label_column, labels, sizes, top_labels)

    clusters = [{
        "cluster_id": c,
        "size": int(sizes[c]),
        "share": float(sizes[c] / n),
        "mean_confidence": float(conf_sum[c] / conf_n[c]) if conf_n[c] else None,
        "numeric": numeric[c],
        "categories": categories[c],
        "terms": terms[c],
        "exemplars": exemplars[c],
        "labels": truth[c],
    } for c in range(k)]
    return ClusterProfiles(n_rows=n, n_clusters=k, clusters=clusters)


# ----------------------------------------------------------------------------- checks
def _label_profiles(frame: pd.DataFrame, label_column: str | None, labels: np.ndarray,
                    sizes: np.ndarray, top: int) -> list[list[dict]]:
    """Per cluster the ``top`` most common ground-truth values: value, count, share of the
    cluster (missing values count as their own value, ``None``)."""
    k = len(sizes)
    if not label_column:
        return [[] for _ in range(k)]
    if label_column not in frame.columns:
        raise ValueError(f"label column {label_column!r} missing from the frame")
    values = frame[label_column].astype(object).where(frame[label_column].notna(), None)
    counts = pd.crosstab(labels, values.map(repr), dropna=False)
    shown = {repr(v): v for v in values.drop_duplicates()}
    out = []
    for c in range(k):
        if c not in counts.index or sizes[c] == 0:
            out.append([])
            continue
        row = counts.loc[c]
        row = row[row > 0].sort_values(ascending=False, kind="stable")[:top]
        out.append([{"value": _plain(shown[key]), "count": int(n),
                     "share": float(n / sizes[c])} for key, n in row.items()])
    return out


def _plain(value):
    """A JSON-ready label value (numpy scalars to Python)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_inputs(frame, cluster_id, confidence, distance, features, id_column, n_clusters,
                  **counts):
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    n = len(frame)
    if n == 0:
        raise ValueError("cannot profile clusters of 0 rows")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) \
            or n_clusters < 1:
        raise ValueError(f"n_clusters={n_clusters!r} should be an integer >= 1")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}={value!r} should be an integer >= 0")
    missing = [c for c in [id_column, *features.columns()] if c not in frame.columns]
    if missing:
        raise ValueError(f"columns missing from the frame: {missing}")
    arrays = {"cluster_id": np.asarray(cluster_id).ravel(),
              "confidence": np.asarray(confidence, dtype=np.float64).ravel(),
              "distance": np.asarray(distance, dtype=np.float64).ravel()}
    bad = {name: len(a) for name, a in arrays.items() if len(a) != n}
    if bad:
        raise ValueError(f"expected one value per row of the frame ({n}), got lengths {bad}")
    labels = arrays["cluster_id"]
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or not np.all(np.isfinite(labels)) \
                or not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"cluster_id must hold integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_clusters:
        raise ValueError(f"cluster_id values must be in 0..{n_clusters - 1} "
                         f"(n_clusters={n_clusters}), found {labels.min()}..{labels.max()}")
    return labels, arrays["confidence"], arrays["distance"]


# ----------------------------------------------------------------------------- numeric
def _numeric_blocks(frame, features):
    """(names, (n, b) float64 with NaN for missing) blocks of the numeric features and of the
    elements of short vector columns."""
    cols = features.numeric
    for start in range(0, len(cols), _BLOCK):
        names = cols[start:start + _BLOCK]
        yield names, np.column_stack([_numeric(frame[c], c) for c in names])
    for col, length in features.vector.items():
        if length <= MAX_VECTOR_ELEMENTS:
            V = _stack_vectors(frame[col], length, col).astype(np.float64)
            yield [f"{col}[{i}]" for i in range(length)], V


def _numeric_profiles(frame, features, labels, member, top):
    """Per cluster, the ``top`` numeric features by |standardised mean difference|.

    Inputs were checked by ``cluster_profiles``; ``member`` is the (k, n) 0/1 membership matrix.
    """
    k = member.shape[0]
    names, effects, means_in, means_out = [], [], [], []
    for block_names, X in _numeric_blocks(frame, features):
        ok = np.isfinite(X)
        n_ok = ok.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            # centred on the column mean, so that sums of squares do not cancel out
            centre = np.where(n_ok > 0, np.where(ok, X, 0.0).sum(axis=0) / np.maximum(n_ok, 1), 0)
        Xc = np.where(ok, X - centre, 0.0)
        constant = np.where(ok, X, -np.inf).max(axis=0) <= np.where(ok, X, np.inf).min(axis=0)
        n_in = member @ ok.astype(np.float64)  # (k, b)
        s1_in = member @ Xc
        s2_in = member @ (Xc * Xc)
        n_out, s1_out, s2_out = n_ok - n_in, s1_in.sum(0) - s1_in, s2_in.sum(0) - s2_in
        with np.errstate(invalid="ignore", divide="ignore"):
            m_in, m_out = s1_in / n_in, s1_out / n_out
            ss_in = np.maximum(s2_in - s1_in * m_in, 0.0)
            ss_out = np.maximum(s2_out - s1_out * m_out, 0.0)
            pooled = np.sqrt((np.nan_to_num(ss_in) + np.nan_to_num(ss_out))
                             / np.maximum(n_in + n_out - 2, 1))
            overall = np.sqrt(np.maximum(s2_in.sum(0) - s1_in.sum(0) ** 2 / n_ok, 0) / n_ok)
            scale = np.where(pooled > _EPS * overall, pooled, overall)
            d = (m_in - m_out) / scale
        d = np.where(constant, 0.0, d)
        names += list(block_names)
        effects.append(d)
        means_in.append(m_in + centre)
        means_out.append(m_out + centre)
    out: list[list[dict]] = [[] for _ in range(k)]
    if not names or top == 0:
        return out
    D = np.concatenate(effects, axis=1)
    M_in = np.concatenate(means_in, axis=1)
    M_out = np.concatenate(means_out, axis=1)
    score = np.nan_to_num(np.abs(D), nan=0.0, posinf=0.0)
    n_in = np.asarray(member.sum(axis=1), dtype=np.float64)  # (k, 1)
    n = float(member.shape[1])
    clear = score * np.sqrt(n_in * np.maximum(n - n_in, 0) / max(n, 1.0)) >= MIN_Z
    score = np.where((score >= MIN_EFFECT) & clear, score, 0.0)
    order = np.argsort(-score, axis=1, kind="stable")[:, :top]
    for c in range(k):
        out[c] = [{"feature": names[j], "value": _float(D[c, j]), "mean_in": _float(M_in[c, j]),
                   "mean_out": _float(M_out[c, j])}
                  for j in order[c] if score[c, j] > _EPS]
    return out


# ----------------------------------------------------------------------------- categories
def _category_profiles(frame, columns, labels, sizes, min_count, top):
    """Per cluster, the ``top`` over-represented values of each categorical column by lift.

    Inputs were checked by ``cluster_profiles``.
    """
    k, n = len(sizes), len(labels)
    out: list[list[dict]] = [[] for _ in range(k)]
    if top == 0:
        return out
    for col in columns:
        values, null = _as_strings(frame[col])
        codes, uniques = pd.factorize(np.where(null, NULL_CATEGORY, values))
        m = len(uniques)
        pairs, count = np.unique(labels * m + codes, return_counts=True)
        c, code = pairs // m, pairs % m
        share_in = count / sizes[c]
        share_all = np.bincount(codes, minlength=m)[code] / n
        lift = share_in / share_all
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (share_in - share_all) / np.sqrt(share_all * (1 - share_all) / sizes[c])
        keep = (count >= min_count[c]) & (lift > 1 + 1e-9) & (np.nan_to_num(z) >= MIN_Z)
        c, code, count, share_in, share_all, lift = (a[keep] for a in
                                                     (c, code, count, share_in, share_all, lift))
        order = np.lexsort((code, -count, -lift, c))
        for i in _first_per_group(c[order], top):
            j = order[i]
            out[c[j]].append({"column": col, "category": str(uniques[code[j]]),
                              "share_in": float(share_in[j]), "share_overall": float(share_all[j]),
                              "lift": float(lift[j]), "count": int(count[j])})
    return out


# ----------------------------------------------------------------------------- terms
def _term_profiles(frame, columns, member, sizes, min_count, top):
    """Per cluster, the ``top`` terms of each text column that are over-represented in it.

    Inputs were checked by ``cluster_profiles``.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    k, n = len(sizes), member.shape[1]
    out: list[list[dict]] = [[] for _ in range(k)]
    if top == 0:
        return out
    for col in columns:
        vectorizer = CountVectorizer(stop_words="english", binary=True, max_features=MAX_TERMS,
                                     dtype=np.float64)
        try:
            docs = vectorizer.fit_transform(_documents(frame[col]))
        except ValueError:  # empty vocabulary: no terms to report for this column
            continue
        vocab = vectorizer.get_feature_names_out()
        df_in = (member @ docs).toarray()  # (k, V) rows of the cluster containing each term
        df_out = np.asarray(docs.sum(axis=0)).ravel() - df_in
        n_in, n_out = sizes[:, None].astype(np.float64), (n - sizes)[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            share_in, share_out = df_in / n_in, df_out / n_out
        score = np.nan_to_num(share_in) * np.log(((df_in + 0.5) / (n_in + 1))
                                                 / ((df_out + 0.5) / (n_out + 1)))
        pooled = (df_in + df_out) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (share_in - share_out) / np.sqrt(pooled * (1 - pooled) * (1 / n_in + 1 / n_out))
        # a cluster holding every row has no rest to compare with
        score = np.where((df_in >= min_count[:, None]) & (n_out > 0)
                         & (np.nan_to_num(z) >= MIN_Z), score, 0.0)
        order = np.argsort(-score, axis=1, kind="stable")[:, :top]
        for c in range(k):
            out[c] += [{"column": col, "term": str(vocab[j]), "share_in": _float(share_in[c, j]),
                        "share_out": _float(share_out[c, j]), "score": float(score[c, j]),
                        "count": int(df_in[c, j])}
                       for j in order[c] if score[c, j] > 0]
    return out


# ----------------------------------------------------------------------------- exemplars
def _exemplars(ids: pd.Series, labels, distance, k, n_exemplars):
    """Per cluster, the ids of its ``n_exemplars`` rows of smallest distance (NaN last)."""
    out: list[list] = [[] for _ in range(k)]
    if n_exemplars == 0:
        return out
    key = np.where(np.isnan(distance), np.inf, distance)
    order = np.lexsort((np.arange(len(labels)), key, labels))
    picked = order[_first_per_group(labels[order], n_exemplars)]
    values = ids.to_numpy(dtype=object)[picked]
    for c, v in zip(labels[picked], values):
        out[c].append(_json_scalar(v))
    return out


# ----------------------------------------------------------------------------- helpers
def _first_per_group(groups: np.ndarray, top: int) -> np.ndarray:
    """Positions of the first ``top`` items of each run of equal values in sorted ``groups``."""
    if len(groups) == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return np.flatnonzero(np.arange(len(groups)) - run_start < top)


def _float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _json_scalar(v):
    """An id as a JSON-safe Python scalar: numbers and strings as is, NaN/None/NaT -> None,
    timestamps as ISO text, anything else as ``str``."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, bool) or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _fmt(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _escape_markdown(text: str) -> str:
    """Cell text that renders as itself: HTML escaped, Markdown table/code/emphasis marks
    backslash-escaped, line breaks as spaces."""
    text = text.replace("\\", "\\\\")
    text = html.escape(text, quote=False)
    for ch in "|`*":
        text = text.replace(ch, "\\" + ch)
    return " ".join(text.splitlines())
