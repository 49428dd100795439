"""Feature encoding: raw source columns -> one float32 vector per row.

``FeatureEncoder`` is fitted on the training window and saved with the model as one JSON file
(no pickle), so scoring uses exactly the training-time transformation. Encoding per kind
(``FeaturesConfig``), output columns in this order:

- numeric: non-finite/null values imputed with the training median, centred on the training
  mean and divided by a scale (``numeric_scaling``): each column's own std ("column"), or one
  scale shared by all numeric columns, the root mean square of their stds ("shared"). "auto"
  (the default) shares when no column's std exceeds ``SHARED_SPREAD_RATIO`` (10) times the
  median std: columns of one unit (pixels, sensor channels, counts) keep their relative
  spread, so a near-constant column is not blown up to the weight of an informative one (the
  estimator scales its input the same way); columns whose spreads differ by more (income next
  to age) are standardised one by one so that no unit swamps the others. A std of 0 -> 1.
- categorical: one-hot of the ``max_categories`` most frequent training values (kept in sorted
  order), plus an ``__unknown__`` column for null, rare and unseen values.
- vector: fixed-length list<float> stacked into columns; NaN elements imputed with the
  training element mean; optionally standardised per element (``scale_vectors``).
- text: TF-IDF (sklearn defaults: lower-case, ``\\b\\w\\w+\\b`` tokens, smooth idf, l2 rows) and
  truncated SVD to ``text_components`` dimensions. The fitted vocabulary, idf and SVD
  components are stored as plain lists and the transform is reimplemented with numpy/scipy.

Weight of a column. A categorical column's one-hot block and a text column's SVD block are
scaled to a total variance of 1 on the training rows: each declared column starts with the
weight of one standardised numeric column (a two-valued categorical column then sits exactly
as its standardised 0/1 indicator would). With ``column_weighting="relevance"`` (the default)
every column is then multiplied by a weight in [0, 1] measured on the training rows without
labels: how much of the column its nearest rows in the *other* columns predict
(``decflow.model.relevance``). A column that nothing else in the table predicts (a random code, an
unrelated number or text) gets weight 0 and no longer shapes the clusters; columns that share
structure keep weight 1. ``weights_`` and ``relevance_`` hold the measures per column.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from decflow.config import FeaturesConfig
from decflow.files import write_atomic
from decflow.model.relevance import RELEVANCE_ROWS, column_relevance

UNKNOWN = "__unknown__"
TEXT_MAX_FEATURES = 5000  # TF-IDF vocabulary cap: bounds the JSON state (components are k x V)
_TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # TfidfVectorizer's default token_pattern
_FORMAT = "decflow.FeatureEncoder"
_FORMAT_VERSION = 2  # 2: per-column "block_scale" and "weight" (files of version 1: both 1)
_READABLE_VERSIONS = (1, 2)


class FeatureEncoder:
    """Raw columns -> one float32 vector per row.

    Fitted on the training window, saved with the model (``save``/``load``, one JSON file).

    Args:
        features: which columns to encode, by kind, and how.

    Attributes:
        state_: ``{column: {...}}`` fitted per-column state (numpy arrays / lists).
        n_features_out_: width of the output vectors.
        feature_names_out_: one name per output column: ``"x"``, ``"c=red"``,
            ``"c=__unknown__"``, ``"pixels[0]"``, ``"title:svd0"``.
        weights_: ``{column: weight}`` in [0, 1] (all 1 with ``column_weighting="equal"``).
        relevance_: ``{column: R^2}`` predicted from the other columns (None where not
            measured: equal weighting, a single column, too few distinct rows).
    """

    def __init__(self, features: FeaturesConfig):
        self.features = features

    # ------------------------------------------------------------------ fit / transform
    def fit(self, df: pd.DataFrame) -> "FeatureEncoder":
        """Learn medians, scales, categories and text vocabularies from the training window.

        Raises:
            ValueError: no rows, missing columns, non-numeric numeric columns, vectors of the
                wrong length, or a text column without any token.
        """
        self._check_columns(df)
        if len(df) == 0:
            raise ValueError("cannot fit a FeatureEncoder on 0 rows")
        f = self.features
        state: dict[str, dict] = {}
        for col in f.numeric:
            v = _numeric(df[col], col)
            finite = np.isfinite(v)
            median = float(np.median(v[finite])) if finite.any() else 0.0
            v = np.where(finite, v, median)
            state[col] = {"kind": "numeric", "median": median, "mean": float(v.mean()),
                          "scale": _safe_scale(float(v.std()))}
        self.numeric_scaling_ = numeric_scaling(
            [state[c]["scale"] for c in f.numeric], f.numeric_scaling)
        if self.numeric_scaling_ == "shared":
            shared = _safe_scale(float(np.sqrt(np.mean([state[c]["scale"] ** 2
                                                         for c in f.numeric]))))
            for col in f.numeric:
                state[col]["scale"] = shared
        for col in f.categorical:
            state[col] = {"kind": "categorical",
                          "categories": _top_categories(df[col], f.max_categories)}
        for col, length in f.vector.items():
            V = _stack_vectors(df[col], length, col).astype(np.float64)
            mean = np.nan_to_num(_nanmean0(V))
            st = {"kind": "vector", "length": length, "fill": mean}
            if f.scale_vectors:
                V = np.where(np.isnan(V), mean, V)
                st["mean"] = mean
                st["scale"] = np.array([_safe_scale(s) for s in V.std(axis=0)])
            state[col] = st
        for col in f.text:
            state[col] = _fit_text(_documents(df[col]), f.text_components, col)
        self.state_ = state
        self.feature_names_out_ = self._names()
        self.n_features_out_ = len(self.feature_names_out_)
        for col in [*f.categorical, *f.text]:  # one unit of variance per declared column
            block = _ENCODE[state[col]["kind"]](df[col], state[col], col).astype(np.float64)
            total = float(block.var(axis=0).sum())
            state[col]["block_scale"] = 1.0 / np.sqrt(total) if total > 1e-12 else 1.0
        self._fit_weights(df)
        return self

    def _fit_weights(self, df: pd.DataFrame) -> None:
        """Set each column's ``weight`` (see the module docstring) from a seeded sample."""
        cols = self.features.columns()
        for col in cols:
            self.state_[col]["weight"] = 1.0
            self.state_[col]["relevance"] = None
        if self.features.column_weighting != "relevance" or len(cols) < 2:
            return
        rows = min(len(df), 4 * RELEVANCE_ROWS)
        sample = df.iloc[np.sort(np.random.default_rng(0).choice(len(df), rows, replace=False))]
        blocks = [self._encode_column(sample, col) for col in cols]
        relevance, weight = column_relevance(blocks)
        for col, r, w in zip(cols, relevance, weight):
            self.state_[col]["weight"] = float(w)
            self.state_[col]["relevance"] = None if np.isnan(r) else float(r)

    @property
    def weights_(self) -> dict[str, float]:
        self._check_fitted()
        return {c: float(self.state_[c].get("weight", 1.0)) for c in self.features.columns()}

    @property
    def relevance_(self) -> dict[str, float | None]:
        self._check_fitted()
        return {c: self.state_[c].get("relevance") for c in self.features.columns()}

    def _encode_column(self, df: pd.DataFrame, col: str) -> np.ndarray:
        """One column's (n, width) block, scaled by its ``block_scale`` and ``weight``."""
        st = self.state_[col]
        block = _ENCODE[st["kind"]](df[col], st, col)
        factor = st.get("block_scale", 1.0) * st.get("weight", 1.0)
        if factor != 1.0:
            block = block * np.float32(factor)
        return block

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Encode ``df``.

        Args:
            df: a DataFrame holding at least the configured feature columns (extra columns ignored).

        Returns:
            (n, n_features_out_) float32, C-contiguous.

        Raises:
            ValueError: not fitted, missing columns, or a vector row of the wrong length / null.
        """
        self._check_fitted()
        self._check_columns(df)
        out = np.empty((len(df), self.n_features_out_), dtype=np.float32)
        j = 0
        for col in self.features.columns():
            block = self._encode_column(df, col)
            out[:, j:j + block.shape[1]] = block
            j += block.shape[1]
        return out

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        """``fit(df).transform(df)``."""
        return self.fit(df).transform(df)

    # ------------------------------------------------------------------ contract
    def schema(self) -> dict:
        """The input contract, JSON-serialisable: ``{column: {"kind": ..., ...}}``.

        numeric -> ``dtype: "double"``; categorical -> ``dtype: "string"`` and, once fitted, the
        kept ``categories``; vector -> ``dtype: "list<float>"`` and ``length``; text ->
        ``dtype: "string"``. Columns are in output order.
        """
        f = self.features
        fitted = hasattr(self, "state_")
        out: dict[str, dict] = {}
        for col in f.numeric:
            out[col] = {"kind": "numeric", "dtype": "double"}
        for col in f.categorical:
            out[col] = {"kind": "categorical", "dtype": "string"}
            if fitted:
                out[col]["categories"] = list(self.state_[col]["categories"])
        for col, length in f.vector.items():
            out[col] = {"kind": "vector", "dtype": "list<float>", "length": length}
        for col in f.text:
            out[col] = {"kind": "text", "dtype": "string"}
        return out

    def schema_digest(self) -> str:
        """Short sha256 (16 hex) of the input columns/kinds/lengths and the output layout.

        Equal digests mean equal output layouts (same width, same meaning per column name), so a
        previous model's autoencoder can warm-start a new one. Requires a fitted encoder.
        """
        self._check_fitted()
        inputs = [[col, s["kind"], s.get("length")] for col, s in self.schema().items()]
        payload = json.dumps({"inputs": inputs, "outputs": self.feature_names_out_})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Write config and fitted state as one JSON file (``decflow.files.write_atomic``)."""
        self._check_fitted()
        path = Path(path)
        doc = {"format": _FORMAT, "version": _FORMAT_VERSION,
               "features": self.features.model_dump(mode="json"),
               "state": {col: _to_json(st) for col, st in self.state_.items()}}
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
        return write_atomic(path, text)

    @classmethod
    def load(cls, path) -> "FeatureEncoder":
        """Read a file written by ``save``; the result transforms exactly as the saved encoder."""
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("format") != _FORMAT or doc.get("version") not in _READABLE_VERSIONS:
            raise ValueError(f"{path} is not a FeatureEncoder file of a version in "
                             f"{list(_READABLE_VERSIONS)} "
                             f"(format={doc.get('format')!r}, version={doc.get('version')!r})")
        enc = cls(FeaturesConfig.model_validate(doc["features"]))
        missing = sorted(set(enc.features.columns()) - set(doc["state"]))
        if missing:
            raise ValueError(f"{path}: no fitted state for columns {missing}")
        enc.state_ = {col: _from_json(doc["state"][col]) for col in enc.features.columns()}
        enc.feature_names_out_ = enc._names()
        enc.n_features_out_ = len(enc.feature_names_out_)
        return enc

    # ------------------------------------------------------------------ helpers
    def _names(self) -> list[str]:
        names: list[str] = []
        for col in self.features.columns():
            st = self.state_[col]
            kind = st["kind"]
            if kind == "numeric":
                names.append(col)
            elif kind == "categorical":
                names += [f"{col}={c}" for c in st["categories"]] + [f"{col}={UNKNOWN}"]
            elif kind == "vector":
                names += [f"{col}[{i}]" for i in range(st["length"])]
            else:
                names += [f"{col}:svd{i}" for i in range(st["components"].shape[0])]
        return names

    def _check_fitted(self) -> None:
        if not hasattr(self, "state_"):
            raise ValueError("this FeatureEncoder is not fitted yet; call fit() first")

    def _check_columns(self, df: pd.DataFrame) -> None:
        missing = [c for c in self.features.columns() if c not in df.columns]
        if missing:
            raise ValueError(f"missing feature columns: {missing} "
                             f"(the frame has {list(map(str, df.columns))[:20]})")

    def __repr__(self) -> str:
        fitted = f", n_features_out_={self.n_features_out_}" if hasattr(self, "state_") else ""
        return f"FeatureEncoder(columns={self.features.columns()}{fitted})"


# ---------------------------------------------------------------------- per-kind encoding
SHARED_SPREAD_RATIO = 10.0  # "auto": share one scale when max std <= this x the median std


def numeric_scaling(stds: list[float], setting: str = "auto") -> str:
    """"column" or "shared" for numeric columns of these stds (constant columns, std 1 after
    ``_safe_scale``, count as they are); "auto" applies the ``SHARED_SPREAD_RATIO`` rule, and
    fewer than two columns are "column" (the same thing)."""
    if setting != "auto":
        return setting
    if len(stds) < 2:
        return "column"
    s = np.asarray(stds, dtype=np.float64)
    return "shared" if s.max() <= SHARED_SPREAD_RATIO * np.median(s) else "column"


def _safe_scale(s: float) -> float:
    return s if np.isfinite(s) and s > 0 else 1.0


def _nanmean0(V: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; all-NaN columns -> NaN without a warning."""
    count = (~np.isnan(V)).sum(axis=0)
    total = np.nansum(V, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _numeric(s: pd.Series, col: str) -> np.ndarray:
    try:
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise ValueError(f"numeric feature column {col!r} has non-numeric values "
                         f"(dtype {s.dtype}): {e}") from None


def _encode_numeric(s: pd.Series, st: dict, col: str) -> np.ndarray:
    v = _numeric(s, col)
    v = np.where(np.isfinite(v), v, st["median"])
    return ((v - st["mean"]) / st["scale"]).astype(np.float32)[:, None]


def _as_strings(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as str (object array) and the null mask."""
    null = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s.dtype):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        w = v[~null]
        if np.array_equal(w, np.round(w)) and (w.size == 0 or np.abs(w).max() < 2.0 ** 53):
            # an integer code column turns float when a null appears: 3.0 must still match "3"
            s = pd.Series(np.where(null, 0, v).astype(np.int64), index=s.index)
    return s.astype(str).to_numpy(dtype=object), null


def _top_categories(s: pd.Series, max_categories: int) -> list[str]:
    vals, null = _as_strings(s)
    counts = pd.Series(vals[~null]).value_counts(sort=False)
    counts = counts[counts.index != UNKNOWN]
    # most frequent first, ties by value; the kept set is then sorted so the layout does not
    # depend on the order of frequencies
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
    return sorted(k for k, _ in ranked)


def _encode_categorical(s: pd.Series, st: dict, col: str) -> np.ndarray:
    cats = st["categories"]
    vals, null = _as_strings(s)
    codes = pd.Index(cats, dtype=object).get_indexer(vals)
    codes[(codes < 0) | null] = len(cats)
    out = np.zeros((len(codes), len(cats) + 1), dtype=np.float32)
    out[np.arange(len(codes)), codes] = 1.0
    return out


def _raise_bad_lengths(col: str, length: int, lengths: np.ndarray) -> None:
    bad = np.flatnonzero(lengths != length)
    if bad.size:
        found = sorted({"null" if x < 0 else int(x) for x in lengths[bad][:1000]},
                       key=lambda x: (isinstance(x, str), x))
        raise ValueError(f"vector column {col!r}: expected length {length}, found {found} in "
                         f"{bad.size} row(s); first offending row positions: {bad[:5].tolist()}")


def _stack_vectors(s: pd.Series, length: int, col: str) -> np.ndarray:
    """(n, length) float32, a fresh writable array, from a column of lists / numpy arrays /
    pyarrow lists (flattened without per-row Python work); raises on bad lengths or nulls."""
    n = len(s)
    if isinstance(s.dtype, pd.ArrowDtype):
        arr = s.array.__arrow_array__()
        t = arr.type
        is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        if not (is_list and (pa.types.is_floating(t.value_type)
                             or pa.types.is_integer(t.value_type))):
            raise ValueError(f"vector column {col!r} must hold lists of numbers, got {s.dtype}")
        lengths = pc.list_value_length(arr).fill_null(-1).to_numpy().astype(np.int64)
        _raise_bad_lengths(col, length, lengths)
        if n == 0:
            return np.empty((0, length), dtype=np.float32)
        flat = [c.flatten().to_numpy(zero_copy_only=False) for c in arr.chunks if len(c)]
        return np.concatenate(flat).astype(np.float32, copy=False).reshape(n, length)
    values = s.to_numpy(dtype=object)
    lengths = np.fromiter(map(_length, values), dtype=np.int64, count=n)
    _raise_bad_lengths(col, length, lengths)
    if n == 0:
        return np.empty((0, length), dtype=np.float32)
    if isinstance(values[0], (str, bytes)):
        raise ValueError(f"vector column {col!r} must hold lists of numbers, got strings")
    try:
        if isinstance(values[0], np.ndarray):
            return np.stack(values).astype(np.float32, copy=False).reshape(n, length)
        return np.array(values.tolist(), dtype=np.float32).reshape(n, length)
    except (TypeError, ValueError) as e:
        raise ValueError(f"vector column {col!r} holds non-numeric elements: {e}") from None


def _length(v) -> int:
    try:
        return len(v)
    except TypeError:  # None, NaN, scalars
        return -1


def _encode_vector(s: pd.Series, st: dict, col: str) -> np.ndarray:
    V = _stack_vectors(s, st["length"], col)
    if np.isnan(V.sum()):  # cheap check; NaN elements are rare
        V = np.where(np.isnan(V), st["fill"].astype(np.float32), V)
    if "scale" in st:
        V -= st["mean"].astype(np.float32)
        V /= st["scale"].astype(np.float32)
    return V


def _documents(s: pd.Series) -> list[str]:
    null = s.isna().to_numpy()
    return ["" if m else str(v) for v, m in zip(s.to_numpy(dtype=object), null)]


def _fit_text(docs: list[str], n_components: int, col: str) -> dict:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=TEXT_MAX_FEATURES, dtype=np.float64)
    try:
        X = vec.fit_transform(docs)
    except ValueError as e:  # empty vocabulary
        raise ValueError(f"text column {col!r}: cannot build a vocabulary ({e})") from None
    vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    n_vocab = len(vocab)
    if n_vocab < 2:  # SVD needs n_components < n_features: keep the single TF-IDF column
        components = np.ones((1, n_vocab))
    else:
        k = min(n_components, n_vocab - 1, X.shape[0])
        components = TruncatedSVD(n_components=k, random_state=0).fit(X).components_
    return {"kind": "text", "vocabulary": vocab, "idf": np.asarray(vec.idf_, dtype=np.float64),
            "components": np.ascontiguousarray(components, dtype=np.float64)}


def _tfidf(docs: list[str], st: dict):
    """TfidfVectorizer.transform reimplemented from the stored vocabulary and idf (CSR, l2 rows)."""
    from scipy import sparse

    index = st.get("_index")
    if index is None:
        index = st["_index"] = {t: i for i, t in enumerate(st["vocabulary"])}
    rows, cols = [], []
    for r, doc in enumerate(docs):
        for tok in _TOKEN_PATTERN.findall(doc.lower()):
            j = index.get(tok)
            if j is not None:
                rows.append(r)
                cols.append(j)
    X = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                          shape=(len(docs), len(st["vocabulary"])), dtype=np.float64)
    X.sum_duplicates()
    X = X @ sparse.diags(st["idf"])
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ X


def _encode_text(s: pd.Series, st: dict, col: str) -> np.ndarray:
    X = _tfidf(_documents(s), st)
    return np.asarray(X @ st["components"].T, dtype=np.float32)


_ENCODE = {"numeric": _encode_numeric, "categorical": _encode_categorical,
           "vector": _encode_vector, "text": _encode_text}

_ARRAYS = ("fill", "mean", "scale", "idf", "components")  # state keys held as numpy arrays


def _to_json(st: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in st.items() if not k.startswith("_")}


def _from_json(st: dict) -> dict:
    out = dict(st)
    for k in _ARRAYS:
        if k in out and isinstance(out[k], list):
            out[k] = np.asarray(out[k], dtype=np.float64)
    if out.get("kind") == "text":
        out["components"] = out["components"].reshape(-1, len(out["vocabulary"]))
    return out
