"""Label write-back: atomic replace per partition; unusable sources are data errors."""

import os

import pytest

import pyarrow as pa

from decflow.data import partitioned, sources


def test_write_partition_tolerates_a_temporary_that_vanishes(tmp_path, monkeypatch):
    # another writer renames its temporary between our listing and our age check
    part = tmp_path / "ds=2026-11-20"
    part.mkdir()
    (part / ".part-0.parquet.other.tmp").write_bytes(b"")

    def vanished(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(os.path, "getmtime", vanished)
    partitioned.write_partition(str(tmp_path), "ds", "2026-11-20", pa.table({"id": [1, 2]}))
    assert partitioned.read_partition(str(tmp_path), "ds", "2026-11-20")["id"].tolist() == [1, 2]


def test_write_partition_replaces_and_removes_old_temporaries(tmp_path):
    stale = tmp_path / "ds=2026-11-20" / ".part-0.parquet.crashed.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))  # older than an hour: a crashed writer's
    for ids in ([1, 2, 3], [4, 5]):
        partitioned.write_partition(str(tmp_path), "ds", "2026-11-20", pa.table({"id": ids}))
    assert partitioned.read_partition(str(tmp_path), "ds", "2026-11-20")["id"].tolist() == [4, 5]
    assert os.listdir(stale.parent) == ["part-0.parquet"]


def _source(tmp_path):
    from decflow.config import SourceConfig

    return SourceConfig(uri=str(tmp_path / "source"), window_days=2)


def test_a_missing_source_dataset_is_a_data_error(tmp_path):
    import pytest

    from decflow.errors import DataError

    with pytest.raises(DataError, match=r"source dataset not found: .*source"):
        sources.scan_window(_source(tmp_path), "2026-11-21")


@pytest.mark.parametrize("content", [b"not a parquet file", b"PAR1" + b"\0" * 40,
                                     "truncated"], ids=["garbage", "magic-only", "truncated"])
def test_a_corrupt_or_truncated_file_is_a_data_error_naming_it(tmp_path, content):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from decflow.errors import DataError

    part = tmp_path / "source" / "ds=2026-11-21"
    part.mkdir(parents=True)
    good = pa.table({"id": list(range(1000)), "x": [0.5] * 1000})
    pq.write_table(good, part / "part-0.parquet")
    if content == "truncated":
        data = (part / "part-0.parquet").read_bytes()
        (part / "part-1.parquet").write_bytes(data[: len(data) // 2])
    else:
        (part / "part-1.parquet").write_bytes(content)
    with pytest.raises(DataError, match=r"ds=2026-11-21/part-1.parquet is not a readable "
                                        r"Parquet file"):
        sources.scan_window(_source(tmp_path), "2026-11-21")


# How the writers a source table comes from name the files of one partition. Data: every name
# that does not start with "_" or "."; side files and in-flight folders: those that do.
WRITERS = {
    "spark": {"data": ["part-00000-3f2a9c1e-7b44-4d1e-9a51-0c8d2b6e4f10-c000.snappy.parquet",
                       "part-00001-3f2a9c1e-7b44-4d1e-9a51-0c8d2b6e4f10-c000.snappy.parquet"],
              "side": ["_SUCCESS", "._SUCCESS.crc",
                       ".part-00000-3f2a9c1e-7b44-4d1e-9a51-0c8d2b6e4f10-c000.snappy.parquet.crc",
                       "_temporary/0/_temporary/attempt_202611210000_0001_m_000002_5/"
                       "part-00002-3f2a9c1e-7b44-4d1e-9a51-0c8d2b6e4f10-c000.snappy.parquet",
                       "_committed_8791245", "_started_8791245"]},
    "hive": {"data": ["000000_0", "000001_0", "000002_0_copy_1"],
             "side": [".hive-staging_hive_2026-11-21_00-00-00_000_1/-ext-10000/000000_0"]},
    "pandas": {"data": ["0a1b2c3d4e5f40718293a4b5c6d7e8f9-0.parquet"],
               "side": ["_metadata", "_common_metadata"]},
    "duckdb": {"data": ["data_0.parquet", "data_1.parquet"], "side": []},
    "pyarrow": {"data": ["part-0.parquet", "part-1.parquet"],
                "side": [".part-0.parquet.4c1d.tmp"]},
}


def _write_named(folder, name, rows, start):
    import pyarrow.parquet as pq

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(range(start, start + rows)),
                             "x": [float(i) for i in range(rows)]}), path)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_data_file_of_a_partition_is_read_whatever_its_writer_names_it(tmp_path, writer):
    """A partition's data files are all its files except names (of the file or of a folder on
    its way) that start with "_" or "."; Hive's suffix-less 000000_0 is data like the rest."""
    source = _source(tmp_path)
    folder = tmp_path / "source" / "ds=2026-11-21"
    names = WRITERS[writer]
    for i, name in enumerate(names["data"]):
        _write_named(folder, name, rows=40 + i, start=1000 * i)
    for i, name in enumerate(names["side"]):  # side files hold Parquet too: never read
        _write_named(folder, name, rows=7, start=900_000 + 1000 * i)
    scan = sources.scan_window(source, "2026-11-21", 1)
    assert sorted(os.path.relpath(f.path, folder) for f in scan.files) == sorted(names["data"])
    assert sum(f.n_rows for f in scan.files) == sum(40 + i for i in range(len(names["data"])))


def test_a_file_of_a_partition_that_is_not_parquet_is_refused_by_name(tmp_path):
    from decflow.errors import DataError

    folder = tmp_path / "source" / "ds=2026-11-21"
    _write_named(folder, "000000_0", rows=60, start=0)
    (folder / "README.txt").write_text("exported by the nightly job")
    with pytest.raises(DataError, match=r"ds=2026-11-21/README\.txt is not a readable Parquet"):
        sources.scan_window(_source(tmp_path), "2026-11-21", 1)


def test_a_night_must_exist_and_hold_rows(tmp_path):
    import pyarrow.parquet as pq

    from decflow.errors import DataError

    source = _source(tmp_path)
    _write_named(tmp_path / "source" / "ds=2026-11-20", "part-0.parquet", rows=30, start=0)
    with pytest.raises(DataError, match=r"source partition ds=2026-11-21 is missing in .*"
                                        r"\(partitions found in the window: \['2026-11-20'\]\)"):
        sources.scan_night(source, "2026-11-21")
    empty = tmp_path / "source" / "ds=2026-11-21" / "part-0.parquet"
    empty.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "x": pa.array([], pa.float64())}),
                   empty)
    with pytest.raises(DataError, match=r"ds=2026-11-21 has no rows \(1 Parquet files, 0 rows\)"):
        sources.scan_night(source, "2026-11-21", 1)
    _write_named(empty.parent, "part-1.parquet", rows=5, start=100)
    assert sources.scan_night(source, "2026-11-21").n_rows == 35  # the window: both days


def test_the_night_as_validated_and_the_files_that_landed_since(tmp_path):
    from decflow.errors import DataError

    folder = tmp_path / "source" / "ds=2026-11-21"
    _write_named(folder, "part-0.parquet", rows=30, start=0)
    window = sources.scan_night(_source(tmp_path), "2026-11-21")
    _write_named(folder, "part-1.parquet", rows=4, start=500)  # lands after validation
    snapshot, late = sources.snapshot_night(window, "2026-11-21")
    assert [f.name for f in snapshot.files] == ["ds=2026-11-21/part-0.parquet"]
    assert late == ["ds=2026-11-21/part-1.parquet"]
    _write_named(folder, "part-0.parquet", rows=31, start=0)  # a validated file changes
    with pytest.raises(DataError, match=r"source files changed after validation, before "
                                        r"labelling: \['ds=2026-11-21/part-0.parquet'\]"):
        sources.snapshot_night(window, "2026-11-21")
