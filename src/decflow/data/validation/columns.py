"""Helper columns GX can check: per-value kinds, vector lengths and non-finite elements
(``<col>__type``, ``<col>__length``, ``<col>__nonfinite``) derived on a copy of a frame."""

import math
from typing import TYPE_CHECKING, Any
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from decflow.config import FeaturesConfig
from decflow.data.arrow_lists import list_type
if TYPE_CHECKING:
    pass


def feature_kinds(features: FeaturesConfig) -> dict[str, str]:
    return {**{c: "numeric" for c in features.numeric},
            **{c: "categorical" for c in features.categorical},
            **{c: "vector" for c in features.vector},
            **{c: "text" for c in features.text}}


def helper_column(column: str, what: str) -> str:
    return f"{column}__{what}"


def prepare_frame(df: pd.DataFrame, features: FeaturesConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame GX validates, and ``df`` with a RangeIndex (for samples).

    Both have a RangeIndex, so GX's unexpected indices are row positions. The GX frame adds the
    helper columns and replaces each vector column by its per-row kind (same nulls): GX hashes
    every batch it loads and falls back to pickling the whole frame when a column holds
    unhashable arrays, which for 10k x 64 vectors cost more than the validation itself.
    """
    data = df.reset_index(drop=True)
    helpers, stand_ins = {}, {}
    for col, kind in feature_kinds(features).items():
        if col not in data.columns:
            continue
        helpers[helper_column(col, "type")] = _value_kinds(data[col])
        if kind == "vector":
            stand_ins[col] = helpers[helper_column(col, "type")]
            helpers[helper_column(col, "length")], helpers[helper_column(col, "nonfinite")] = \
                _vector_stats(data[col])
    return data.assign(**stand_ins, **helpers), data


_KIND_OF_TYPE: dict[type, str] = {}


def _cached_kind(v: Any) -> str:
    """``_value_kind`` through a per-type cache (a kind depends on the value's type only)."""
    t = type(v)
    kind = _KIND_OF_TYPE.get(t)
    if kind is None:
        kind = _KIND_OF_TYPE[t] = _value_kind(v)
    return kind


def _value_kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "list"
    return type(v).__name__


def _dtype_kind(dtype) -> str | None:
    """The kind every non-null value of ``dtype`` has, or None when values must be looked at."""
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if isinstance(dtype, pd.StringDtype):
        return "str"
    return None


def _value_kinds(s: pd.Series) -> pd.Series:
    """Per-row value kind ("int", "float", "bool", "str", "list" or a type name); null if null.

    Categorical: GX's null, set and hashing passes then work on integer codes, where object
    strings cost a Python-level pass each (about half of a batch's validation time).
    """
    if isinstance(s.dtype, pd.CategoricalDtype):  # the kinds of its categories, by code
        per_category = _value_kinds(pd.Series(s.dtype.categories))
        codes = s.cat.codes.to_numpy()
        lookup = np.append(per_category.cat.codes.to_numpy(), -1)  # code -1 (null) stays null
        return _categorical(lookup[codes], list(per_category.cat.categories), s.index)
    kind = _dtype_kind(s.dtype) or _arrow_kind(s.dtype)
    if kind is not None:
        kinds, codes = [kind], np.zeros(len(s), dtype=np.int16)
    else:
        index_of: dict[str, int] = {}
        codes = np.fromiter((index_of.setdefault(_cached_kind(v), len(index_of))
                             for v in s.to_numpy(dtype=object)), dtype=np.int16, count=len(s))
        kinds = list(index_of)
    codes[s.isna().to_numpy()] = -1
    return _categorical(codes, kinds, s.index)


def _arrow_kind(dtype) -> str | None:
    """"list" for an Arrow list column: every non-null value is a list, known from the type."""
    return "list" if list_type(dtype) is not None else None


def _categorical(codes: np.ndarray, kinds: list[str], index: pd.Index) -> pd.Series:
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(kinds, dtype=object)),
                     index=index)


def _vector_stats(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per-row list length and count of non-finite/non-numeric elements; <NA> for non-lists.

    Numeric 1-d arrays (what Parquet list columns become) of the most common length are
    checked in one vectorised pass; other values one by one. When every value is a view of one
    finite array (a decoded Parquet or Arrow list column), no element is looked at again.
    """
    t = list_type(s.dtype)
    if t is not None and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        return _arrow_vector_stats(s)
    n = len(s)
    values = s.to_numpy(dtype=object)
    base = _shared_base(values)
    if base is not None and np.isfinite(base).all():  # then so is every view of it
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        present = np.zeros(n, dtype=bool)
        return (pd.Series(pd.arrays.IntegerArray(lengths, present), index=s.index),
                pd.Series(pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), present.copy()),
                          index=s.index))
    lengths = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=np.int64)
    missing = np.ones(n, dtype=bool)
    fast = np.fromiter((type(v) is np.ndarray and v.ndim == 1 and v.dtype.kind in "iuf"
                        for v in values), dtype=bool, count=n)
    if fast.any():
        rows = np.flatnonzero(fast)
        lens = np.fromiter((len(values[i]) for i in rows), dtype=np.int64, count=len(rows))
        common = np.bincount(lens).argmax()
        rows = rows[lens == common]
        if len(rows) and common:
            block = np.stack(values[rows])
            bad[rows] = common - np.isfinite(block).sum(axis=1)
        lengths[rows], missing[rows] = common, False
        fast[:] = False
        fast[rows] = True
    for i in np.flatnonzero(~fast):
        v = values[i]
        if isinstance(v, (list, tuple, np.ndarray)):
            lengths[i], bad[i], missing[i] = len(v), _n_bad_elements(v), False
    return (pd.Series(pd.arrays.IntegerArray(lengths, missing.copy()), index=s.index),
            pd.Series(pd.arrays.IntegerArray(bad, missing), index=s.index))


def _arrow_vector_stats(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``_vector_stats`` of an Arrow list column of numbers, without per-row Python work: a
    null element counts as non-finite, like NaN."""
    arr = s.array.__arrow_array__()
    if isinstance(arr, pa.ChunkedArray):  # one array: the lookups below then line up
        arr = arr.combine_chunks()
    missing = arr.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(arr)  # the elements of the non-null lists, in row order
    if pa.types.is_floating(flat.type):
        ok = pc.fill_null(pc.is_finite(flat), False)
    else:
        ok = pc.is_valid(flat)
    where = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    bad = np.zeros(len(s), dtype=np.int64)
    if where.size:  # rare: find the rows of the bad elements only then
        np.add.at(bad, pc.list_parent_indices(arr).to_numpy()[where], 1)
    return (pd.Series(pd.arrays.IntegerArray(lengths, missing.copy()), index=s.index),
            pd.Series(pd.arrays.IntegerArray(bad, missing), index=s.index))


def _shared_base(values: np.ndarray) -> np.ndarray | None:
    """The numeric array every value is a 1-d view of (same dtype), or None."""
    if not len(values) or type(values[0]) is not np.ndarray:
        return None
    base, dtype = values[0].base, values[0].dtype
    if type(base) is not np.ndarray or base.dtype != dtype or dtype.kind not in "iuf":
        return None
    if all(type(v) is np.ndarray and v.base is base and v.ndim == 1 and v.dtype == dtype
           for v in values):
        return base
    return None


def _n_bad_elements(v) -> int:
    """How many elements of one vector are not finite real numbers (nested counts as bad)."""
    try:
        a = np.asarray(v)
    except ValueError:  # ragged nesting
        return len(v)
    if a.ndim != 1:
        return len(v)
    if a.dtype.kind in "biuf":
        return int(a.size - np.count_nonzero(np.isfinite(a)))
    if a.dtype.kind == "O":
        return sum(1 for x in a if isinstance(x, (bool, np.bool_, str))
                   or not isinstance(x, (int, float, np.number)) or not math.isfinite(x))
    return int(a.size)  # strings, dates, ...
