"""Label write-back: atomic replace per partition; unusable sources are data errors."""

import os

import pytest

import pyarrow as pa

from decflow.data import storage


def test_write_partition_tolerates_a_temporary_that_vanishes(tmp_path, monkeypatch):
    # another writer renames its temporary between our listing and our age check
    part = tmp_path / "ds=2026-11-20"
    part.mkdir()
    (part / ".part-0.parquet.other.tmp").write_bytes(b"")

    def vanished(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(os.path, "getmtime", vanished)
    storage.write_partition(str(tmp_path), "ds", "2026-11-20", pa.table({"id": [1, 2]}))
    assert storage.read_partition(str(tmp_path), "ds", "2026-11-20")["id"].tolist() == [1, 2]


def test_write_partition_replaces_and_removes_old_temporaries(tmp_path):
    stale = tmp_path / "ds=2026-11-20" / ".part-0.parquet.crashed.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))  # older than an hour: a crashed writer's
    for ids in ([1, 2, 3], [4, 5]):
        storage.write_partition(str(tmp_path), "ds", "2026-11-20", pa.table({"id": ids}))
    assert storage.read_partition(str(tmp_path), "ds", "2026-11-20")["id"].tolist() == [4, 5]
    assert os.listdir(stale.parent) == ["part-0.parquet"]


def _source(tmp_path):
    from decflow.config import SourceConfig

    return SourceConfig(uri=str(tmp_path / "source"), window_days=2)


def test_a_missing_source_dataset_is_a_data_error(tmp_path):
    import pytest

    from decflow.data import storage
    from decflow.errors import DataError

    with pytest.raises(DataError, match=r"source dataset not found: .*source"):
        storage.scan_window(_source(tmp_path), "2026-11-21")


@pytest.mark.parametrize("content", [b"not a parquet file", b"PAR1" + b"\0" * 40,
                                     "truncated"], ids=["garbage", "magic-only", "truncated"])
def test_a_corrupt_or_truncated_file_is_a_data_error_naming_it(tmp_path, content):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from decflow.data import storage
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
        storage.scan_window(_source(tmp_path), "2026-11-21")
