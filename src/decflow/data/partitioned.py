"""Hive-partitioned Parquet datasets, the source and the labels alike: the layout
(``<root>/<date_column>=YYYY-MM-DD/``), whole-partition writes and reads.

Paths are local or any URI pyarrow's file systems understand (``s3://``, ``gs://``, ...).

Write-back contract (DESIGN.md §4): one file per partition, ``part-0.parquet``. Locally it is
written under a hidden temporary name in the same directory and renamed over the old file, so a
reader sees either the old or the new partition, never a mix; a crash leaves the old file and a
hidden temporary that readers ignore (pyarrow skips names starting with "." or "_") and the next
write removes. The file is streamed in row groups (``PartitionWriter``), so a partition of any
size is written in bounded memory. On object stores the finished temporary object is moved
into place (a copy of a complete object: readers see it whole or not at all).
"""

import datetime as dt
import os
import uuid
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decflow.errors import DataError
from decflow.files import replace_durably

PART_FILE = "part-0.parquet"


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


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The file system of ``uri`` and the path in it (a local path is made absolute)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def partition_dir(root: str, date_column: str, day) -> str:
    return f"{root.rstrip('/')}/{date_column}={parse_date(day).isoformat()}"


def list_partitions(uri: str, date_column: str) -> list[dt.date]:
    """Dates that have a partition directory under ``uri`` (sorted); [] when ``uri`` is absent."""
    fs, root = filesystem(uri)
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


def write_partition(uri: str, date_column: str, day, table: pa.Table) -> str:
    """Replace the ``day`` partition of the dataset at ``uri`` with ``table``, atomically.

    Rerunning replaces (never duplicates); concurrent writers of the same partition leave
    exactly one complete file (the last rename wins).

    Returns:
        The path of the written file.
    """
    if date_column in table.column_names:
        table = table.drop_columns([date_column])
    with PartitionWriter(uri, date_column, day, table.schema) as writer:
        writer.write(table)
    return writer.path


class PartitionWriter:
    """Stream one partition's file in row groups, then put it in place atomically.

    ``with PartitionWriter(uri, "ds", day, schema) as w: w.write(table)`` writes row groups to
    a hidden temporary file in the partition directory (readers skip names starting with ".")
    and, when the block ends without an error, renames it over ``part-0.parquet``: a reader
    sees the old partition or the new one, never a mix, and memory holds one written table at
    a time (``schema`` None: the first table's). On an error, or when nothing was written, the
    temporary is removed and the old partition stays. Locally the
    rename is atomic (``rename(2)``); on object stores it is a server-side copy of a complete
    object, which readers also see whole or not at all.
    """

    def __init__(self, uri: str, date_column: str, day, schema: pa.Schema | None = None,
                 metadata: dict[str, str] | None = None,
                 dictionary: Sequence[str] | None = None):
        """``dictionary``: the columns to dictionary-encode (None: every column, pyarrow's
        default); name the columns with few distinct values."""
        self.fs, root = filesystem(uri)
        self.dir = partition_dir(root, date_column, day)
        self.path = f"{self.dir}/{PART_FILE}"
        self.schema = schema
        self.metadata = metadata or {}  # kept in the file's schema metadata
        self.dictionary = True if dictionary is None else list(dictionary)
        self.rows = 0
        self._tmp = f"{self.dir}/.{PART_FILE}.{uuid.uuid4().hex}.tmp"
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "PartitionWriter":
        self._made_dir = self.fs.get_file_info(self.dir).type == pafs.FileType.NotFound
        self.fs.create_dir(self.dir, recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            _remove_stale_temporaries(self.dir)
        return self

    def write(self, table: pa.Table) -> None:
        """Append ``table`` as one or more row groups (cast to the writer's schema)."""
        if self._writer is None:
            self.schema = self.schema or table.schema
            if self.metadata:
                self.schema = self.schema.with_metadata(
                    {**(self.schema.metadata or {}), **{k.encode(): str(v).encode()
                                                       for k, v in self.metadata.items()}})
            self._writer = pq.ParquetWriter(self._tmp, self.schema, filesystem=self.fs,
                                            use_dictionary=self.dictionary)
        try:
            table = table.cast(self.schema)
        except pa.ArrowInvalid as exc:  # e.g. integer ids in one source file, 0.5 in another
            differ = [f"{f.name}: {f.type} vs {self.schema.field(f.name).type}"
                      for f in table.schema if f.type != self.schema.field(f.name).type]
            raise DataError(f"rows for {self.path} do not fit the type of its first rows "
                            f"({'; '.join(differ)}): {exc}; the source files store a column as "
                            f"different types") from None
        self._writer.write_table(table)
        self.rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None and self._writer is not None:
                if isinstance(self.fs, pafs.LocalFileSystem):
                    replace_durably(self._tmp, self.path)
                else:
                    self.fs.move(self._tmp, self.path)
        finally:
            if self.fs.get_file_info(self._tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(self._tmp)
            if self._made_dir and self.fs.get_file_info(self.path).type == \
                    pafs.FileType.NotFound:
                try:  # nothing was put in place: leave no empty partition behind
                    self.fs.delete_dir(self.dir)
                except OSError:  # a concurrent writer's files are in it
                    pass


def _remove_stale_temporaries(part: str) -> None:
    """Delete temporaries of crashed writers (an hour old: a live writer is never that slow)."""
    for stale in os.listdir(part):
        p = os.path.join(part, stale)
        if not (stale.startswith(".") and stale.endswith(".tmp")):
            continue
        try:
            if dt.datetime.now().timestamp() - os.path.getmtime(p) > 3600:
                os.unlink(p)
        except FileNotFoundError:  # a concurrent writer renamed or removed it meanwhile
            pass


def read_partition(uri: str, date_column: str, day) -> pd.DataFrame | None:
    """One partition of a dataset written by ``write_partition`` (None when absent)."""
    fs, root = filesystem(uri)
    path = f"{partition_dir(root, date_column, day)}/{PART_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    return pq.read_table(path, filesystem=fs).to_pandas()


def partition_counts(uri: str, date_column: str, day, column: str) -> dict | None:
    """Rows per value of one column of a partition (None when absent), reading that column
    alone, batch by batch (a labels partition's ``cluster_id``: the night's cluster sizes)."""
    fs, root = filesystem(uri)
    path = f"{partition_dir(root, date_column, day)}/{PART_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    counts: dict = {}
    with fs.open_input_file(path) as fh:
        for batch in pq.ParquetFile(fh).iter_batches(columns=[column]):
            vc = pa.compute.value_counts(batch.column(0))
            for value, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                counts[value] = counts.get(value, 0) + n
    return counts


def read_dataset(uri: str, date_column: str) -> pd.DataFrame:
    """Every partition of a hive-partitioned dataset (date column included)."""
    fs, root = filesystem(uri)
    dataset = ds.dataset(root, filesystem=fs, format="parquet",
                         partitioning=ds.HivePartitioning.discover(infer_dictionary=False))
    frame = dataset.to_table().to_pandas()
    if date_column in frame:
        frame[date_column] = frame[date_column].astype(str).str[:10]
    return frame
