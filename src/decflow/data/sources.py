"""Reading the source window: describe it from Parquet footers, sample it, cut it into chunks.

Reading (DESIGN.md §7): ``scan_window`` describes a window from Parquet footers alone (every file
of a partition folder is data except side files, names starting with ``_`` or ``.``);
``sample_window`` draws the training sample row group by row group; ``WindowScan.chunks`` cuts
the window into row-group chunks that Dask workers read with ``read_chunk``. Only the columns
the config names are read. The night's rules (``scan_night``: the night exists and has rows;
``snapshot_night``: nothing changed between validation and labelling) live here too.
"""

# Just over 500 lines, one concern: what the source window holds and how it is read. The
# night's rules are the cut if it grows (they use only the scan).

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decflow.config import SourceConfig
from decflow.data.arrow_lists import is_list_type, keep_lists
from decflow.data.partitioned import filesystem, list_partitions, parse_date, partition_dir, \
    window_dates
from decflow.errors import ConfigError, DataError
from decflow.redaction import redact

_log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class SourceFile:
    """One Parquet file of a window, described from its footer only (no rows read)."""

    path: str  # path inside the dataset's file system
    day: str  # partition date, YYYY-MM-DD
    group_rows: tuple[int, ...]  # rows per row group
    fingerprint: str = ""  # partition folder, name, size, row counts and schema (the digest)
    types: tuple[tuple[str, str, str], ...] = ()  # (column, kind, Arrow type) from the footer

    @property
    def n_rows(self) -> int:
        return sum(self.group_rows)

    @property
    def name(self) -> str:
        """``ds=2026-11-21/part-0.parquet``: the file within its dataset, for messages."""
        return f"{os.path.basename(os.path.dirname(self.path))}/{os.path.basename(self.path)}"


@dataclass(frozen=True)
class Chunk:
    """Consecutive row groups of one file: the unit of partition-wise work on Dask."""

    source_uri: str  # dataset root (resolves the file system on the worker)
    path: str
    day: str
    row_groups: tuple[int, ...]
    n_rows: int
    first_row: int  # position of the chunk's first row in its file


@dataclass(frozen=True)
class WindowScan:
    """The files of a window and their row counts, from Parquet footers; holds no rows."""

    source_uri: str
    date_column: str
    files: list[SourceFile]
    lineage: Lineage

    @property
    def n_rows(self) -> int:
        return self.lineage.n_rows

    def partition(self, day) -> "WindowScan":
        """The files of one date of this scan: the same files, as they were scanned (a file
        that lands later is not in it, so the rows labelled are the rows validated)."""
        day = parse_date(day).isoformat()
        files = [f for f in self.files if f.day == day]
        present = [day] if day in self.lineage.partitions else []
        return WindowScan(self.source_uri, self.date_column, files,
                          _lineage(self.source_uri, present, [] if present else [day], files,
                                   self.lineage.columns))

    def check_columns(self, columns: list[str] | None) -> None:
        """Every file holds each of ``columns`` that any file holds, with one Arrow type.

        Readers take each file's own schema, so a file that disagrees would otherwise be
        coerced silently (a missing column read as nulls, numbers stored as text cast). A column
        that no file holds is left to validation (``expect_column_to_exist`` names it).

        Raises:
            DataError: naming the column, the file that differs and one file that has it.
        """
        for column in columns or []:
            if column == self.date_column:
                continue
            found = {f.name: next((t for c, _, t in f.types if c == column), None)
                     for f in self.files}
            kind = {f.name: next((k for c, k, _ in f.types if c == column), None)
                    for f in self.files}
            present = {name: t for name, t in found.items() if t is not None}
            if not present:
                continue
            missing = [name for name, t in found.items() if t is None]
            if missing:
                first = next(iter(present))
                raise DataError(
                    f"column {column!r} is missing from {missing[0]} (present in {first} as "
                    f"{present[first]}; {len(missing)} of {len(found)} files lack it): every "
                    f"file of {self.date_column}={self.lineage.partitions[0]}.."
                    f"{self.lineage.partitions[-1]} must hold the same columns")
            kinds = list(dict.fromkeys(kind[n] for n in present))
            if len(kinds) > 1:  # int64 beside double is fine; text beside numbers is not
                a = next(n for n in present if kind[n] == kinds[0])
                b = next(n for n in present if kind[n] == kinds[1])
                raise DataError(f"column {column!r} is {present[a]} in {a} but {present[b]} in "
                                f"{b}: every file must store a column as the same kind of "
                                f"value ({kinds[0]} vs {kinds[1]})")

    def rows_per_partition(self) -> dict[str, int]:
        out = {d: 0 for d in self.lineage.partitions}
        for f in self.files:
            out[f.day] += f.n_rows
        return out

    def chunks(self, chunk_rows: int) -> list["Chunk"]:
        """Whole row groups of one file each, about ``chunk_rows`` rows (at least one group).

        A row group larger than ``chunk_rows`` is its own chunk; readers still decode it in
        batches (``read_chunk``), so memory follows the batch size, not the group size.
        """
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows={chunk_rows} should be >= 1")
        out = []
        for f in self.files:
            groups, rows, first, pos = [], 0, 0, 0
            for g, n in enumerate(f.group_rows):
                if groups and rows + n > chunk_rows:
                    out.append(Chunk(self.source_uri, f.path, f.day, tuple(groups), rows, first))
                    groups, rows, first = [], 0, pos
                groups.append(g)
                rows += n
                pos += n
            if groups and rows:
                out.append(Chunk(self.source_uri, f.path, f.day, tuple(groups), rows, first))
        return out


def partition_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The data files of one partition folder, sorted: every file below it, except side files,
    whose name or the name of a folder on their way starts with "_" or "." (Spark's
    ``_SUCCESS``, ``_committed_*`` and ``_temporary/`` of unfinished tasks, Hadoop's ``.crc``
    checksums, Hive's ``.hive-staging*/``, pyarrow's ``_metadata``, decflow's own temporaries),
    the rule Hive-style readers follow. Any other file is data, with or without a suffix
    (Hive's ``000000_0``, Spark's ``part-*.snappy.parquet``, DuckDB's ``data_0.parquet``): it is
    read, or refused by name when it is not Parquet, never skipped."""
    selector = pafs.FileSelector(folder, recursive=True)
    prefix = folder.rstrip("/") + "/"
    return sorted(f.path for f in fs.get_file_info(selector)
                  if f.type == pafs.FileType.File
                  and not any(part.startswith(("_", "."))
                              for part in f.path[len(prefix):].split("/")))


def scan_window(source: SourceConfig, run_date, window_days: int | None = None) -> WindowScan:
    """Describe the ``window_days`` partitions ending at ``run_date`` from file footers alone.

    Missing partitions inside the window are reported in the lineage. Each partition's files
    are ``partition_files``: every file but side files, whatever its name or suffix.

    Raises:
        DataError: the source dataset does not exist, or a file is not readable Parquet.
    """
    window = window_dates(run_date, window_days or source.window_days)
    fs, root = filesystem(source.uri)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise DataError(f"source dataset not found: {source.uri}")
    present = set(list_partitions(source.uri, source.date_column))
    days = [d for d in window if d in present]
    missing = [d.isoformat() for d in window if d not in present]
    files, columns = [], []
    for d in days:
        for path in partition_files(fs, partition_dir(root, source.date_column, d)):
            info = fs.get_file_info(path)
            meta = _footer(fs, path)
            groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
            columns = columns or list(meta.schema.to_arrow_schema().names)
            # the Arrow schema's text: str(meta.schema) starts with the object's address
            schema = meta.schema.to_arrow_schema().to_string(show_schema_metadata=False)
            fingerprint = json.dumps([os.path.basename(os.path.dirname(path)),
                                      os.path.basename(path), info.size, meta.num_rows,
                                      meta.num_row_groups, schema])
            arrow = meta.schema.to_arrow_schema()
            files.append(SourceFile(path, d.isoformat(), groups, fingerprint,
                                    tuple((c.name, _kind(c.type), str(c.type))
                                          for c in arrow)))
    lineage = _lineage(source.uri, [d.isoformat() for d in days], missing, files,
                       [*columns, source.date_column] if files else [])
    return WindowScan(source.uri, source.date_column, files, lineage)


def scan_night(source: SourceConfig, run_date, window_days: int | None = None,
               min_days: int | None = None) -> WindowScan:
    """``scan_window`` for a night's work: the training window ending at ``run_date``
    (``window_days`` None: the config's, and at least ``min_days`` of its days), or
    ``window_days`` days; the night itself must exist and hold rows. No rows are read.

    Raises:
        DataError: the source is missing; the night's partition is missing or has no rows (an
            empty night would replace its labels with none); too few days of the window.
    """
    scan = scan_window(source, run_date, window_days)
    if window_days is None:
        check_window_days(scan, min_days)
    day = parse_date(run_date)
    name = f"{source.date_column}={day.isoformat()}"
    if day.isoformat() in scan.lineage.missing_partitions:
        raise DataError(f"source partition {name} is missing in {redact(source.uri)} "
                        f"(partitions found in the window: {scan.lineage.partitions or 'none'})")
    files = scan.partition(day).files
    if not sum(f.n_rows for f in files):
        raise DataError(f"source partition {name} has no rows ({len(files)} Parquet files, 0 "
                        f"rows) in {redact(source.uri)}: nothing to label; the labels of {name} "
                        f"are kept")
    return scan


def snapshot_night(window: WindowScan, run_date) -> tuple[WindowScan, list[str]]:
    """The night's files exactly as ``window`` validated them, and the names of files that
    landed there since (not labelled: they were not validated; a backfill labels them later).

    Raises:
        DataError: a validated file changed or disappeared since (its rows cannot be labelled
            as validated).
    """
    day = parse_date(run_date)
    snapshot = window.partition(day)
    now = scan_window(SourceConfig(uri=window.source_uri, date_column=window.date_column),
                      day, 1)
    current = {f.path: f for f in now.files}
    changed = [f.name for f in snapshot.files
               if f.path not in current or current[f.path].fingerprint != f.fingerprint]
    if changed:
        raise DataError(f"source files changed after validation, before labelling: {changed}; "
                        f"nothing was labelled: rerun the night")
    known = {f.path for f in snapshot.files}
    return snapshot, [f.name for f in now.files if f.path not in known]


def training_sample(scan: WindowScan, config) -> pd.DataFrame:
    """The nightly's training rows (and ``decflow sweep-k``'s): a uniform sample of at most
    ``train.max_train_rows`` rows of the window, seeded by ``train.random_state``, with the
    columns the run reads (``PipelineConfig.source_columns``)."""
    t = config.train
    return sample_window(scan, t.max_train_rows, config.source_columns(), t.random_state)


def check_window_days(scan: WindowScan, min_days: int | None) -> None:
    """The training window holds at least ``min_days`` of its daily partitions.

    Raises:
        DataError: fewer are present (the message names the window, the count and the
            missing days). With ``min_days`` None, missing days are only logged (a warning).
    """
    lineage = scan.lineage
    present, missing = lineage.partitions, lineage.missing_partitions
    if not missing:
        return
    total = len(present) + len(missing)
    span = f"{min([*present, *missing])}..{max([*present, *missing])}"
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10
                                       else "")
    if min_days is not None and len(present) < min_days:
        raise DataError(f"the training window {span} holds {len(present)} of its {total} daily "
                        f"partitions of {scan.source_uri}, expected at least {min_days} "
                        f"(validation.min_window_days); missing: {shown}")
    _log.warning("the training window %s holds %d of its %d daily partitions; missing: %s",
                 span, len(present), total, shown)


def _footer(fs: pafs.FileSystem, path: str) -> pq.FileMetaData:
    """A Parquet file's footer; a corrupt or truncated file is a ``DataError`` naming it."""
    try:
        with fs.open_input_file(path) as fh:
            return pq.ParquetFile(fh).metadata
    except pa.ArrowInvalid as exc:
        name = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
        raise DataError(f"{name} is not a readable Parquet file (corrupt or truncated: "
                        f"{exc}); remove or rewrite it") from None


def _kind(t: pa.DataType) -> str:
    """The kind of value a column holds, as readers treat it: widths and list flavours are one
    kind (int32 beside double, list<float> beside large_list<double>), text is not a number."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if is_list_type(t):
        return f"list of {_kind(t.value_type)}"
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    return str(t)


def _lineage(source_uri: str, days: list[str], missing: list[str], files: list[SourceFile],
             columns: list[str]) -> Lineage:
    h = hashlib.sha256()
    for f in files:
        h.update(f.fingerprint.encode())
    return Lineage(source_uri, days, missing, sum(f.n_rows for f in files),
                   h.hexdigest()[:16], columns)


def check_locations(source_uri: str, labels_uri: str) -> None:
    """Labels are never written into the source dataset (nor the source inside the labels).

    Raises:
        ConfigError: one location is the other or lies inside it.
    """
    def norm(uri: str) -> str:
        if "://" in uri:
            return uri.rstrip("/") + "/"
        return os.path.realpath(os.path.abspath(uri)).rstrip("/") + "/"

    src, lab = norm(source_uri), norm(labels_uri)
    if lab.startswith(src) or src.startswith(lab):
        raise ConfigError(f"labels.uri {labels_uri!r} must not be inside source.uri "
                          f"{source_uri!r} (or the source inside the labels): writing labels "
                          f"there would replace or mix with source files")


def read_chunk(chunk: Chunk, date_column: str, columns: list[str] | None = None,
               batch_rows: int = 65_536, arrow_lists: bool = False) -> Iterator[pd.DataFrame]:
    """The rows of ``chunk`` as frames of at most ``batch_rows`` rows, in file order.

    Only ``columns`` that the file has are read (all when None); a string column
    ``<date_column>`` holds the partition date. Each frame's index is the rows' positions in
    their file, so messages can point at a row. ``arrow_lists``: list columns stay Arrow
    arrays (``pd.ArrowDtype``) instead of one numpy array per row (``arrow_lists.plain_lists``
    turns them back); the validation and the encoder read them without per-row Python work.
    """
    types = keep_lists if arrow_lists else None
    fs, _ = filesystem(chunk.source_uri)
    with fs.open_input_file(chunk.path) as fh:
        pf = pq.ParquetFile(fh)
        wanted = _wanted(pf, columns, date_column)
        start = chunk.first_row
        batches = pf.iter_batches(batch_size=batch_rows, row_groups=list(chunk.row_groups),
                                  columns=wanted, use_threads=False)
        while True:
            try:
                batch = next(batches, None)
            except OSError as exc:
                raise _corrupt_page(exc, fs, chunk) from None
            if batch is None:
                return
            _check_batch(batch, chunk, start)
            frame = batch.to_pandas(types_mapper=types)
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            frame[date_column] = chunk.day
            yield frame


def _corrupt_page(exc: OSError, fs, chunk: Chunk) -> Exception:
    """A local file whose footer reads but whose pages do not (pyarrow raises a plain
    ``OSError`` without errno, e.g. "Couldn't deserialize thrift") is corrupt data: a
    ``DataError`` naming the file. On an object store, or with an errno, the same error may be
    a failed read: re-raised as it is (retried as I/O)."""
    if not isinstance(fs, pafs.LocalFileSystem) or exc.errno is not None:
        return exc
    name = f"{os.path.basename(os.path.dirname(chunk.path))}/{os.path.basename(chunk.path)}"
    return DataError(f"{name} is not a readable Parquet file (corrupt data in row groups "
                     f"{list(chunk.row_groups)}: {exc}); remove or rewrite it")


def _check_batch(batch: pa.RecordBatch, chunk: Chunk, first_row: int) -> None:
    """Parquet readers do not check that text is UTF-8; pandas and GX then fail far from the
    file with an unnamed ``ArrowException``. A full validation names the file instead.

    Raises:
        DataError: a column of the batch is malformed (e.g. text that is not UTF-8).
    """
    try:
        batch.validate(full=True)
    except pa.ArrowInvalid as exc:
        name = f"{os.path.basename(os.path.dirname(chunk.path))}/{os.path.basename(chunk.path)}"
        column = str(exc)
        for i, field_name in enumerate(batch.schema.names):  # "In column 2: ..." -> its name
            column = column.replace(f"In column {i}:", f"in column {field_name!r}:", 1)
        raise DataError(f"{name} holds malformed values in the batch of rows {first_row}.."
                        f"{first_row + batch.num_rows - 1} ({column}); rewrite the file"
                        ) from None


def sample_window(scan: WindowScan, n: int, columns: list[str] | None = None,
                  random_state: int | None = 0) -> pd.DataFrame:
    """A uniform sample of at most ``n`` rows of the window, without reading the window.

    Rows are spread over partitions in proportion to their row counts (largest remainders),
    drawn uniformly within each file, and read row group by row group: memory holds the sample
    and one row group's wanted columns, whatever the window's size. Every row when the window
    has at most ``n``.

    Returns:
        The sampled rows (plus the ``<date_column>`` string column), in window order, with a
        fresh RangeIndex.
    """
    scan.check_columns(columns)
    positions = sample_positions(scan, n, random_state)
    if not positions:
        return _empty_frame(columns, scan.date_column)
    frames = []
    fs, _ = filesystem(scan.source_uri)
    for f in scan.files:
        rows = positions.get(f.path)
        if rows is None:
            continue
        bounds = np.concatenate([[0], np.cumsum(f.group_rows)])
        with fs.open_input_file(f.path) as fh:
            pf = pq.ParquetFile(fh)
            wanted = _wanted(pf, columns, scan.date_column)
            for g in np.unique(np.searchsorted(bounds, rows, side="right") - 1):
                local = rows[(rows >= bounds[g]) & (rows < bounds[g + 1])] - bounds[g]
                table = pf.read_row_group(int(g), columns=wanted, use_threads=False)
                frames.append(table.take(pa.array(local)).to_pandas())
                frames[-1][scan.date_column] = f.day
    return pd.concat(frames, ignore_index=True)


def sample_positions(scan: WindowScan, n: int, random_state: int | None = 0
                     ) -> dict[str, np.ndarray]:
    """Which rows ``sample_window`` takes: per file path, the sorted positions of its sampled
    rows (files with none are left out). From row counts alone, so a pass that reads every
    row anyway (the nightly's validation) can take the same sample on the way."""
    rng = np.random.default_rng(random_state)
    files = [f for f in scan.files if f.n_rows]
    if not files:
        return {}
    sizes = np.array([f.n_rows for f in files])
    if scan.n_rows <= n:
        take = sizes
    else:
        quota = sizes * (n / scan.n_rows)
        take = np.floor(quota).astype(np.int64)
        rest = n - int(take.sum())
        take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    positions = {}
    for f, k in zip(files, take):
        if k:
            positions[f.path] = (np.sort(rng.choice(f.n_rows, size=int(k), replace=False))
                                 if k < f.n_rows else np.arange(f.n_rows))
    return positions


def _wanted(pf: pq.ParquetFile, columns: list[str] | None, date_column: str) -> list[str] | None:
    """The asked-for columns the file has (the date comes from the path); None: all."""
    if columns is None:
        return None
    names = pf.schema_arrow.names
    return [c for c in columns if c in names and c != date_column]


def _empty_frame(columns: list[str] | None, date_column: str) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in (columns or [])})
    frame[date_column] = pd.Series(dtype="object")
    return frame


def load_window(source: SourceConfig, run_date, window_days: int | None = None,
                columns: list[str] | None = None) -> tuple[pd.DataFrame, Lineage]:
    """Rows of the ``window_days`` partitions ending at ``run_date``, in one frame.

    For small windows, tests and notebooks; the flows never call it on a window (they use
    ``scan_window`` with ``sample_window`` or chunk-wise work on Dask). Missing partitions
    inside the window are skipped and reported in the lineage; a window with no partition at
    all gives an empty frame. Columns the files lack are left out, not invented, so
    validation can name them.

    Args:
        columns: columns to read (default: all); the date column is always kept.

    Returns:
        (frame with a ``<date_column>`` string column, lineage).

    Raises:
        DataError: the source dataset does not exist, or a file is not readable Parquet.
    """
    scan = scan_window(source, run_date, window_days)
    if not scan.files:
        frame = _empty_frame(columns, source.date_column)
        return frame, scan.lineage
    frames = [frame for chunk in scan.chunks(1 << 62)
              for frame in read_chunk(chunk, source.date_column, columns, 1 << 30)]
    return pd.concat(frames, ignore_index=True), scan.lineage
