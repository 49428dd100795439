"""Label write-back: atomic replace per partition."""

import os

import pyarrow as pa

from decflow import storage


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
