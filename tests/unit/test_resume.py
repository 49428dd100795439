"""The backfill resume rule: skip a date only when the same model labelled the same files."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from decflow.config import SourceConfig
from decflow.data import label_store, partitioned, sources
from decflow.data.resume import plan_day

DAY = dt.date(2026, 11, 21)


def _source(tmp_path, rows=30):
    folder = tmp_path / "source" / f"ds={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(range(rows)), "x": [0.5] * rows}),
                   folder / "part-0.parquet")
    return SourceConfig(uri=str(tmp_path / "source"), window_days=1)


def _labels(tmp_path, source, version="3", name="tiny"):
    scan = sources.scan_window(source, DAY, 1)
    table = pa.table({"id": list(range(scan.n_rows)), "cluster_id": [0] * scan.n_rows,
                      "model_name": [name] * scan.n_rows,
                      "model_version": [version] * scan.n_rows})
    with partitioned.PartitionWriter(str(tmp_path / "labels"), "ds", DAY, metadata={
            label_store.SOURCE_DIGEST_KEY: scan.lineage.digest,
            label_store.SOURCE_ROWS_KEY: scan.n_rows}) as writer:
        writer.write(table)


def _plan(tmp_path, source, version="3", force=False, day=DAY):
    row, _ = plan_day(source, str(tmp_path / "labels"), "tiny", version, day, force)
    return row["status"], row["rows"], row["detail"]


def test_a_date_is_skipped_only_when_the_same_model_labelled_the_same_files(tmp_path):
    source = _source(tmp_path)
    assert _plan(tmp_path, source) == ("", 0, "")  # never labelled
    _labels(tmp_path, source)
    assert _plan(tmp_path, source) == ("skipped", 30, "already labelled by version 3")
    assert _plan(tmp_path, source, version="4")[0] == ""  # another model version
    assert _plan(tmp_path, source, force=True)[0] == ""
    _source(tmp_path, rows=31)  # the partition's rows changed since
    assert _plan(tmp_path, source) == ("", 0, "source changed since it was labelled (30 -> 31 "
                                              "rows); ")


def test_missing_and_unreadable_dates_are_rows_of_their_own(tmp_path):
    source = _source(tmp_path)
    status, _, detail = _plan(tmp_path, source, day=DAY + dt.timedelta(days=1))
    assert (status, detail) == ("missing", "no source partition ds=2026-11-22")
    (tmp_path / "source" / f"ds={DAY}" / "part-1.parquet").write_bytes(b"not parquet")
    status, _, detail = _plan(tmp_path, source)
    assert status == "failed" and "part-1.parquet is not a readable Parquet file" in detail
