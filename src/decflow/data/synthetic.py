"""A synthetic source table from a known mixture of clusters, for tests and scale benchmarks.

Every row is drawn from one of ``n_clusters`` clusters with cluster-specific means for the
numeric features and the vector column, cluster-specific noise levels and sizes, and
cluster-specific category probabilities. The cluster means are close enough that k-means on
the standardised columns recovers the clusters well but not perfectly (ARI about 0.8 at the
default ``separation``); ``separation=0`` gives clusters that cannot be told apart.

The table is written the way the pipeline reads it (DESIGN.md §4): a hive-partitioned Parquet
dataset ``<uri>/<date_column>=YYYY-MM-DD/part-0.parquet``. It is generated and written one row
group at a time, so memory stays bounded whatever the size of the table.
"""

import datetime as dt
import os
import uuid
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decflow.config import PipelineConfig
from decflow.data.partitioned import PART_FILE, parse_date, partition_dir
from decflow import progress
from decflow.files import replace_durably

# Spread of the cluster means per dimension, in units of the within-cluster noise (see the
# module docstring for what it gives).
_MEAN_SPREAD = 0.45


class SyntheticPartition(NamedTuple):
    """One written partition."""

    day: dt.date
    path: str
    rows: int


class _Mixture(NamedTuple):
    """Parameters of the mixture (all derived from the seed)."""

    weights: np.ndarray  # (k,) cluster probabilities
    noise: np.ndarray  # (k,) within-cluster standard deviation
    numeric_means: np.ndarray  # (k, numeric) in noise units
    numeric_loc: np.ndarray  # (numeric,) each numeric column's offset
    numeric_scale: np.ndarray  # (numeric,) and unit (columns differ in scale like real ones)
    vector_means: np.ndarray  # (k, vector_length) float32
    category_cdf: np.ndarray  # (categorical, k, n_categories) cumulative probabilities


def feature_columns(numeric: int = 4, categorical: int = 2, vector_length: int = 56
                    ) -> dict[str, list[str]]:
    """Names of the generated feature columns by kind: ``x0..``, ``c0..`` and ``v``."""
    return {"numeric": [f"x{i}" for i in range(numeric)],
            "categorical": [f"c{i}" for i in range(categorical)],
            "vector": ["v"] if vector_length else []}


def generate_source(uri: str, *, rows: int, days: int, end_date, n_clusters: int = 10,
                    numeric: int = 4, categorical: int = 2, vector_length: int = 56,
                    n_categories: int = 8, rows_per_group: int = 100_000, seed: int = 0,
                    separation: float = 1.0, id_column: str = "id", date_column: str = "ds",
                    label_column: str = "cluster") -> list[SyntheticPartition]:
    """Write ``rows`` rows of a k-cluster mixture as a date-partitioned Parquet dataset.

    Rows are split evenly over ``days`` consecutive dates ending at ``end_date`` (the first
    ``rows % days`` dates get one more). Each partition is written one row group of
    ``rows_per_group`` rows at a time (never held whole): locally under a hidden temporary name
    renamed into place when complete, on object stores (URIs with ``://``) in place. Existing
    partitions are replaced. The same arguments give the same rows: each row group's random
    draws come from ``(seed, day index, row group index)``.

    Columns: ``id_column`` int64 (unique over the dataset: 0 .. rows-1), ``x0..`` float64,
    ``c0..`` string, ``v`` list<float32> of length ``vector_length`` (left out when 0) and
    ``label_column`` int32, the true cluster.

    Args:
        uri: dataset root (local path or pyarrow file system URI).
        rows: total rows, at least ``days``.
        days: number of date partitions.
        end_date: last date (``date`` or ``YYYY-MM-DD``).
        n_clusters: k.
        numeric, categorical: number of numeric and categorical feature columns.
        vector_length: length of the vector column ``v`` (0: no vector column).
        n_categories: distinct values of each categorical column.
        rows_per_group: rows per Parquet row group (the unit generated at a time).
        seed: seed of the mixture and of every draw.
        separation: multiplier of the spread of the cluster means (0: one blob).

    Returns:
        The written partitions, oldest first.

    Raises:
        ValueError: a count out of range or clashing column names.
    """
    _check(rows=rows, days=days, n_clusters=n_clusters, numeric=numeric,
           categorical=categorical, vector_length=vector_length, n_categories=n_categories,
           rows_per_group=rows_per_group, separation=separation, id_column=id_column,
           date_column=date_column, label_column=label_column)
    end = parse_date(end_date)
    mixture = _make_mixture(seed, n_clusters, numeric, categorical, vector_length,
                            n_categories, separation)
    cols = feature_columns(numeric, categorical, vector_length)
    schema = pa.schema([(id_column, pa.int64()),
                        *[(c, pa.float64()) for c in cols["numeric"]],
                        *[(c, pa.string()) for c in cols["categorical"]],
                        *[(c, pa.list_(pa.float32())) for c in cols["vector"]],
                        (label_column, pa.int32())])
    sizes = [rows // days + (i < rows % days) for i in range(days)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    fs, root = _filesystem(uri)
    written = []
    shown = progress.begin("generate", rows, "rows")
    for d, (size, offset) in enumerate(zip(sizes, offsets)):
        day = end - dt.timedelta(days=days - 1 - d)
        part = partition_dir(root, date_column, day)
        groups = (_shown(_row_group(mixture, schema, seed, d, g, int(offset) + start,
                                    min(rows_per_group, size - start)), shown)
                  for g, start in enumerate(range(0, size, rows_per_group)))
        written.append(SyntheticPartition(day, _write_groups(fs, part, schema, groups), size))
    shown.end()
    return written


def _shown(table, shown):
    shown.advance(table.num_rows)
    return table


def synthetic_config(uri: str, *, home: str = ".decflow", n_clusters: int = 10,
                     numeric: int = 4, categorical: int = 2, vector_length: int = 56,
                     n_categories: int = 8, window_days: int = 3, id_column: str = "id",
                     date_column: str = "ds", label_column: str = "cluster",
                     **sections) -> PipelineConfig:
    """A pipeline config for a table written by ``generate_source`` with the same arguments.

    Args:
        uri: the dataset root given to ``generate_source``.
        home: the pipeline's home (embedded stores).
        window_days: training window (``days`` trains on the whole generated table).
        **sections: further settings per section, merged over these, e.g.
            ``train={"max_train_rows": 20_000}``.

    Returns:
        A validated ``PipelineConfig`` (``dump_config`` gives its YAML).
    """
    cols = feature_columns(numeric, categorical, vector_length)
    data = {
        "home": str(home),
        "source": {"uri": uri, "date_column": date_column, "id_column": id_column,
                   "label_column": label_column, "window_days": window_days},
        "features": {"numeric": cols["numeric"], "categorical": cols["categorical"],
                     "vector": {c: vector_length for c in cols["vector"]},
                     "max_categories": max(50, n_categories)},
        "model": {"n_clusters": n_clusters},
    }
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    return PipelineConfig.model_validate(data)


# --- helpers (inputs checked by generate_source) --------------------------------------------------

def _check(*, rows, days, n_clusters, numeric, categorical, vector_length, n_categories,
           rows_per_group, separation, id_column, date_column, label_column) -> None:
    for name, value, low in (("days", days, 1), ("n_clusters", n_clusters, 1),
                             ("numeric", numeric, 0), ("categorical", categorical, 0),
                             ("vector_length", vector_length, 0),
                             ("n_categories", n_categories, 1),
                             ("rows_per_group", rows_per_group, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r} should be an integer >= {low}")
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < days:
        raise ValueError(f"rows={rows!r} should be an integer >= days={days}")
    if not numeric + categorical + vector_length:
        raise ValueError("no feature columns: numeric, categorical and vector_length are all 0")
    if not separation >= 0:
        raise ValueError(f"separation={separation!r} should be >= 0")
    names = [id_column, date_column, label_column]
    cols = feature_columns(numeric, categorical, vector_length)
    names += [c for kind in cols.values() for c in kind]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"id_column, date_column and label_column must differ from each other "
                         f"and from the feature columns {cols}; clashing: {dup}")


def _make_mixture(seed: int, k: int, numeric: int, categorical: int, vector_length: int,
                  n_categories: int, separation: float) -> _Mixture:
    # The row groups draw from streams (seed, 1, day, group); (seed, 0, 0, 0) is the mixture's.
    rng = np.random.default_rng([seed, 0, 0, 0])
    spread = _MEAN_SPREAD * separation
    probs = rng.dirichlet(np.full(n_categories, 0.7), size=(categorical, k))
    cdf = np.cumsum(probs, axis=-1)
    cdf[..., -1] = 1.0
    return _Mixture(
        weights=rng.dirichlet(np.full(k, 20.0)),  # sizes differ by a factor of 2 or so
        noise=rng.uniform(0.75, 1.25, k),
        numeric_means=rng.normal(0.0, spread, (k, numeric)),
        numeric_loc=rng.normal(0.0, 100.0, numeric),
        numeric_scale=10.0 ** rng.uniform(-1.0, 3.0, numeric),
        vector_means=rng.normal(0.0, spread, (k, vector_length)).astype(np.float32),
        category_cdf=cdf,
    )


def _row_group(m: _Mixture, schema: pa.Schema, seed: int, day_index: int, group: int,
               first_id: int, n: int) -> pa.Table:
    """Rows ``first_id .. first_id + n - 1`` as one table of ``schema``."""
    rng = np.random.default_rng([seed, 1, day_index, group])
    y = rng.choice(len(m.weights), size=n, p=m.weights)
    noise = m.noise[y][:, None]
    arrays = [pa.array(np.arange(first_id, first_id + n, dtype=np.int64))]
    x = m.numeric_means[y] + noise * rng.standard_normal((n, m.numeric_means.shape[1]))
    x = m.numeric_loc + m.numeric_scale * x
    arrays += [pa.array(x[:, i]) for i in range(x.shape[1])]
    for c, cdf in enumerate(m.category_cdf):
        u = rng.random(n)
        idx = (u[:, None] >= cdf[y]).sum(axis=1).astype(np.int32)
        names = pa.array([f"c{c}_{j}" for j in range(cdf.shape[-1])], pa.string())
        arrays.append(pa.DictionaryArray.from_arrays(idx, names).cast(pa.string()))
    length = m.vector_means.shape[1]
    if length:
        v = m.vector_means[y]
        v += noise.astype(np.float32) * rng.standard_normal((n, length), dtype=np.float32)
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), length)
                      .cast(pa.list_(pa.float32())))
    arrays.append(pa.array(y.astype(np.int32)))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_groups(fs: pafs.FileSystem, part: str, schema: pa.Schema, groups) -> str:
    """Write the tables ``groups`` yields as the row groups of ``part``/part-0.parquet."""
    fs.create_dir(part, recursive=True)
    final = f"{part}/{PART_FILE}"
    local = isinstance(fs, pafs.LocalFileSystem)
    # Readers skip names starting with "."; a crash leaves such a temporary, never a part file.
    target = f"{part}/.{PART_FILE}.{uuid.uuid4().hex}.tmp" if local else final
    try:
        with pq.ParquetWriter(target, schema, filesystem=fs) as writer:
            for table in groups:
                writer.write_table(table, row_group_size=len(table))
        if local:
            replace_durably(target, final)
    finally:
        if local and os.path.exists(target):
            os.unlink(target)
    return final


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)
