"""Parquet I/O: read the source window, write labels atomically per date partition.

Both datasets are hive-partitioned by a date column (``ds=YYYY-MM-DD``). Paths are local or any
URI pyarrow's file systems understand (``s3://``, ``gs://``, ...).

Write-back contract (DESIGN.md §4): one file per partition, ``part-0.parquet``. Locally it is
written under a hidden temporary name in the same directory and renamed over the old file, so a
reader sees either the old or the new partition, never a mix; a crash leaves the old file and a
hidden temporary that readers ignore (pyarrow skips names starting with "." or "_") and the next
write removes. On object stores a single PUT is atomic, so the file is written in place.
"""

import datetime as dt
import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .config import SourceConfig

PART_FILE = "part-0.parquet"


@dataclass(frozen=True)
class Lineage:
    """Where a frame came from (logged with the model)."""

    source_uri: str
    partitions: list[str]
    missing_partitions: list[str]
    n_rows: int
    digest: str  # sha256 over each file's path, size and Parquet footer (schema, row counts)
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_date(value) -> dt.date:
    """A date from ``date``, ``datetime`` or ``YYYY-MM-DD`` text (ValueError otherwise)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"invalid date {value!r}: expected YYYY-MM-DD") from None


def window_dates(run_date, window_days: int) -> list[dt.date]:
    """The ``window_days`` dates ending at ``run_date``, oldest first."""
    end = parse_date(run_date)
    return [end - dt.timedelta(days=i) for i in range(window_days - 1, -1, -1)]


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def partition_dir(root: str, date_column: str, day) -> str:
    return f"{root.rstrip('/')}/{date_column}={parse_date(day).isoformat()}"


def list_partitions(uri: str, date_column: str) -> list[dt.date]:
    """Dates that have a partition directory under ``uri`` (sorted); [] when ``uri`` is absent."""
    fs, root = _fs(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return []
    out = []
    for entry in fs.get_file_info(pafs.FileSelector(root)):
        name = entry.base_name
        if entry.type == pafs.FileType.Directory and name.startswith(date_column + "="):
            try:
                out.append(parse_date(name.split("=", 1)[1]))
            except ValueError:
                continue
    return sorted(out)


def load_window(source: SourceConfig, run_date, window_days: int | None = None,
                columns: list[str] | None = None) -> tuple[pd.DataFrame, Lineage]:
    """Rows of the ``window_days`` partitions ending at ``run_date``.

    Missing partitions inside the window are skipped and reported in the lineage; a window with
    no partition at all gives an empty frame (validation then reports the row count). Columns the
    files lack are left out, not invented, so validation can name them.

    Args:
        columns: columns to read (default: all); the date column is always kept.

    Returns:
        (frame with a ``<date_column>`` string column, lineage).

    Raises:
        ValueError: the source dataset does not exist.
    """
    window = window_dates(run_date, window_days or source.window_days)
    fs, root = _fs(source.uri)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise ValueError(f"source dataset not found: {source.uri}")
    present = set(list_partitions(source.uri, source.date_column))
    days = [d for d in window if d in present]
    missing = [d.isoformat() for d in window if d not in present]
    files = []
    for d in days:
        sel = pafs.FileSelector(partition_dir(root, source.date_column, d), recursive=True)
        files += sorted(f.path for f in fs.get_file_info(sel)
                        if f.type == pafs.FileType.File and f.path.endswith(".parquet")
                        and not os.path.basename(f.path).startswith((".", "_")))
    if not files:
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in (columns or [])})
        frame[source.date_column] = pd.Series(dtype="object")
        return frame, Lineage(source.uri, [d.isoformat() for d in days], missing, 0,
                              _digest(fs, []), list(frame.columns))
    dataset = ds.dataset(files, filesystem=fs, format="parquet",
                         partitioning=ds.HivePartitioning.discover(infer_dictionary=False),
                         partition_base_dir=root)
    names = dataset.schema.names
    wanted = [c for c in (columns or names) if c in names and c != source.date_column]
    table = dataset.to_table(columns=wanted + [source.date_column])
    frame = table.to_pandas()
    frame[source.date_column] = frame[source.date_column].astype(str).str[:10]
    return frame, Lineage(source.uri, [d.isoformat() for d in days], missing, len(frame),
                          _digest(fs, files), list(frame.columns))


def _digest(fs: pafs.FileSystem, files: list[str]) -> str:
    h = hashlib.sha256()
    for path in files:
        info = fs.get_file_info(path)
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
            h.update(json.dumps([os.path.basename(os.path.dirname(path)),
                                 os.path.basename(path), info.size, meta.num_rows,
                                 meta.num_row_groups, str(meta.schema)]).encode())
    return h.hexdigest()[:16]


LABEL_COLUMNS = ("cluster_id", "confidence", "distance", "model_name", "model_version", "run_id",
                 "labeled_at")


def labels_table(ids: pd.Series, cluster_id, confidence, distance, *, id_column: str,
                 model_name: str, model_version: str, run_id: str,
                 labeled_at: dt.datetime | None = None) -> pa.Table:
    """A labels table with the schema of DESIGN.md §4 (the date column lives in the path)."""
    n = len(ids)
    ts = labeled_at or dt.datetime.now(dt.timezone.utc)
    return pa.table({
        id_column: pa.array(ids.to_numpy() if hasattr(ids, "to_numpy") else ids),
        "cluster_id": pa.array(np.asarray(cluster_id, dtype=np.int32)),
        "confidence": pa.array(np.asarray(confidence, dtype=np.float32)),
        "distance": pa.array(np.asarray(distance, dtype=np.float32)),
        "model_name": pa.array([model_name] * n, pa.string()),
        "model_version": pa.array([str(model_version)] * n, pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
        "labeled_at": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
    })


def write_partition(uri: str, date_column: str, day, table: pa.Table) -> str:
    """Replace the ``day`` partition of the dataset at ``uri`` with ``table``, atomically.

    Rerunning replaces (never duplicates); concurrent writers of the same partition leave
    exactly one complete file (the last rename wins).

    Returns:
        The path of the written file.
    """
    if date_column in table.column_names:
        table = table.drop_columns([date_column])
    fs, root = _fs(uri)
    part = partition_dir(root, date_column, day)
    fs.create_dir(part, recursive=True)
    final = f"{part}/{PART_FILE}"
    if not isinstance(fs, pafs.LocalFileSystem):
        pq.write_table(table, final, filesystem=fs)
        return final
    for stale in os.listdir(part):
        # temporaries of crashed writers (an hour old: a live writer is never that slow)
        p = os.path.join(part, stale)
        if not (stale.startswith(".") and stale.endswith(".tmp")):
            continue
        try:
            if dt.datetime.now().timestamp() - os.path.getmtime(p) > 3600:
                os.unlink(p)
        except FileNotFoundError:  # a concurrent writer renamed or removed it meanwhile
            pass
    tmp = f"{part}/.{PART_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def read_partition(uri: str, date_column: str, day) -> pd.DataFrame | None:
    """One partition of a dataset written by ``write_partition`` (None when absent)."""
    fs, root = _fs(uri)
    path = f"{partition_dir(root, date_column, day)}/{PART_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    return pq.read_table(path, filesystem=fs).to_pandas()


def read_dataset(uri: str, date_column: str) -> pd.DataFrame:
    """Every partition of a hive-partitioned dataset (date column included)."""
    fs, root = _fs(uri)
    dataset = ds.dataset(root, filesystem=fs, format="parquet",
                         partitioning=ds.HivePartitioning.discover(infer_dictionary=False))
    frame = dataset.to_table().to_pandas()
    if date_column in frame:
        frame[date_column] = frame[date_column].astype(str).str[:10]
    return frame
