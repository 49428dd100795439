"""The labels dataset: its schema (DESIGN.md §4) and what a labels partition says about who
labelled it (model name and version, the labelled source files' digest and row count).

Labels partitions are written and read with ``decflow.data.partitioned``.
"""

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decflow.data.partitioned import PART_FILE, filesystem, partition_dir

# Labels files record which source files they label (schema metadata), for backfill resume.
SOURCE_DIGEST_KEY = "decflow.source_digest"
SOURCE_ROWS_KEY = "decflow.source_rows"

LABEL_COLUMNS = ("cluster_id", "confidence", "distance", "model_name", "model_version", "run_id",
                 "labeled_at")
# Columns with few distinct values in a partition, dictionary-encoded in its file. The others
# (ids, confidence, distance) are nearly all distinct: a dictionary attempt on them is wasted
# work before Parquet falls back to plain pages (measured: writing 200,000-row tables 3.3x
# faster, files 29% smaller).
DICTIONARY_COLUMNS = ("cluster_id", "model_name", "model_version", "run_id", "labeled_at")


def labels_table(ids: pd.Series, cluster_id, confidence, distance, *, id_column: str,
                 model_name: str, model_version: str, run_id: str,
                 labeled_at: dt.datetime | None = None) -> pa.Table:
    """A labels table with the schema of DESIGN.md §4 (the date column lives in the path)."""
    return with_model_columns(scores_table(ids, cluster_id, confidence, distance,
                                           id_column=id_column),
                              model_name=model_name, model_version=model_version,
                              run_id=run_id, labeled_at=labeled_at)


def scores_table(ids: pd.Series, cluster_id, confidence, distance, *,
                 id_column: str) -> pa.Table:
    """The labels rows' own columns: id, cluster id, confidence, distance (20 bytes a row with
    int64 ids). What a chunk task sends to the flow's process, which adds the columns that are
    the same on every row (``with_model_columns``): those were three quarters of the bytes."""
    return pa.table({
        id_column: pa.array(ids.to_numpy() if hasattr(ids, "to_numpy") else ids),
        "cluster_id": pa.array(np.asarray(cluster_id, dtype=np.int32)),
        "confidence": pa.array(np.asarray(confidence, dtype=np.float32)),
        "distance": pa.array(np.asarray(distance, dtype=np.float32)),
    })


def with_model_columns(scores: pa.Table, *, model_name: str, model_version: str, run_id: str,
                       labeled_at: dt.datetime | None = None) -> pa.Table:
    """``scores`` (from ``scores_table``) with the columns every row shares: who labelled it
    and when (DESIGN.md §4, in that order)."""
    n = scores.num_rows
    ts = labeled_at or dt.datetime.now(dt.timezone.utc)

    def same(value, type_: pa.DataType) -> pa.Array:  # one value n times, without a list
        return pa.repeat(pa.scalar(value, type_), n)

    for name, value, type_ in (("model_name", model_name, pa.string()),
                               ("model_version", str(model_version), pa.string()),
                               ("run_id", run_id, pa.string()),
                               ("labeled_at", ts, pa.timestamp("us", tz="UTC"))):
        scores = scores.append_column(name, same(value, type_))
    return scores


@dataclass(frozen=True)
class LabelsVersions:
    """Who labelled a partition, from its ``model_name``/``model_version`` columns alone."""

    n_rows: int
    model_names: set[str]
    model_versions: set[str]
    source_digest: str | None = None  # the labelled source files' digest (None: not recorded)
    source_rows: int | None = None


def labels_versions(uri: str, date_column: str, day) -> LabelsVersions | None:
    """The models behind a labels partition (None when absent), reading two columns."""
    fs, root = filesystem(uri)
    path = f"{partition_dir(root, date_column, day)}/{PART_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    names, versions, n = set(), set(), 0
    with fs.open_input_file(path) as fh:
        pf = pq.ParquetFile(fh)
        meta = {k.decode(): v.decode() for k, v in (pf.schema_arrow.metadata or {}).items()}
        for batch in pf.iter_batches(columns=["model_name", "model_version"]):
            n += batch.num_rows
            names |= set(pa.compute.unique(batch.column(0)).to_pylist())
            versions |= set(pa.compute.unique(batch.column(1)).to_pylist())
    rows = meta.get(SOURCE_ROWS_KEY)
    return LabelsVersions(n, names, versions, meta.get(SOURCE_DIGEST_KEY),
                          int(rows) if rows is not None else None)
