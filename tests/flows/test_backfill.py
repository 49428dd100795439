"""Backfill: per-partition validate -> score -> write; resumable, idempotent, concurrent-safe."""

import datetime as dt
import os
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from decflow import storage
from decflow.config import dump_config
from flowkit import RUN_DATE, make_rows, tiny_config
from flows.backfill import BackfillFailed, backfill
from flows.cli import app
from flows.recluster import recluster

DAYS5 = [RUN_DATE - dt.timedelta(days=i) for i in range(4, -1, -1)]
CORRUPT = DAYS5[1]  # outside the training window (the last 3 days)


def _write_day(uri, i, day, corrupt=False):
    import pyarrow as pa

    cols = make_rows(60, i * 60, seed=i)
    if corrupt:
        cols["x"][4] = np.nan
    arrays = {k: (pa.array([list(map(float, e)) for e in v], pa.list_(pa.float32()))
                  if k == "emb" else pa.array(v)) for k, v in cols.items()}
    storage.write_partition(uri, "ds", day, pa.table(arrays))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("bf")
    source = str(home / "source")
    for i, day in enumerate(DAYS5):
        _write_day(source, i, day, corrupt=day == CORRUPT)
    config = tiny_config(home, source, backfill={"concurrency": 2})
    recluster(config=config, run_date=RUN_DATE)
    # start the backfill tests from an empty labels dataset
    for root, dirs, files in os.walk(config.labels_uri(), topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for d in dirs:
            os.rmdir(os.path.join(root, d))
    return config


def _files(config):
    out = {}
    for root, _, files in os.walk(config.labels_uri()):
        for f in files:
            p = os.path.join(root, f)
            out[p] = os.stat(p).st_mtime_ns
    return out


def _check_consistent(config, days):
    labels = storage.read_dataset(config.labels_uri(), "ds")
    for day in days:
        part = labels[labels["ds"] == day.isoformat()]
        source, _ = storage.load_window(config.source, day, 1)
        assert len(part) == len(source) and part["id"].is_unique
        assert part["model_version"].nunique() == 1
    leftovers = [p for p in _files(config) if os.path.basename(p).startswith(".")]
    assert leftovers == []


def test_backfill_labels_good_partitions_and_reports_the_corrupt_one(trained):
    config = trained
    with pytest.raises(BackfillFailed) as err:
        backfill(config=config, start=DAYS5[0], end=DAYS5[-1])
    rows = {r["date"]: r for r in err.value.rows}
    assert [r["status"] for r in err.value.rows].count("labelled") == 4
    bad = rows[CORRUPT.isoformat()]
    assert bad["status"] == "failed"
    assert "expect_column_values_to_not_be_null on column 'x'" in bad["detail"]
    assert CORRUPT.isoformat() in str(err.value)
    assert storage.read_partition(config.labels_uri(), "ds", CORRUPT) is None
    _check_consistent(config, [d for d in DAYS5 if d != CORRUPT])

    # rerun: the 4 are skipped (files untouched), the corrupt one is retried and fails again
    before = _files(config)
    with pytest.raises(BackfillFailed) as err:
        backfill(config=config, start=DAYS5[0], end=DAYS5[-1])
    statuses = {r["date"]: r["status"] for r in err.value.rows}
    assert sorted(statuses.values()) == ["failed"] + ["skipped"] * 4
    assert _files(config) == before

    # once the source is fixed, the rerun labels only that partition
    _write_day(config.source.uri, 1, CORRUPT)
    rows = backfill(config=config, start=DAYS5[0], end=DAYS5[-1])
    assert {r["date"]: r["status"] for r in rows}[CORRUPT.isoformat()] == "labelled"
    assert [r["status"] for r in rows].count("skipped") == 4
    _check_consistent(config, DAYS5)

    # --force rewrites every partition, still one copy each
    before = _files(config)
    rows = backfill(config=config, start=DAYS5[0], end=DAYS5[-1], force=True)
    assert [r["status"] for r in rows] == ["labelled"] * 5
    after = _files(config)
    assert set(after) == set(before) and all(after[p] != before[p] for p in after)
    _check_consistent(config, DAYS5)


def test_missing_partition_is_reported_not_fatal(trained):
    config = trained
    later = RUN_DATE + dt.timedelta(days=1)
    rows = backfill(config=config, start=RUN_DATE, end=later)
    by_date = {r["date"]: r for r in rows}
    assert by_date[later.isoformat()]["status"] == "missing"
    assert by_date[RUN_DATE.isoformat()]["status"] in ("labelled", "skipped")


def test_two_concurrent_backfills_leave_one_consistent_copy(trained):
    config = trained
    errors = []

    def run(start, end):
        try:
            backfill(config=config, start=start, end=end, force=True)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(DAYS5[0], DAYS5[3])),
               threading.Thread(target=run, args=(DAYS5[1], DAYS5[4]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = [p for p in _files(config)]
    assert sorted(os.path.basename(os.path.dirname(p)) for p in files) == \
        sorted(f"ds={d}" for d in DAYS5)
    for p in files:
        pq.read_table(p)  # every file complete and readable
    _check_consistent(config, DAYS5)


def test_cli_backfill(trained, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(trained))
    runner = CliRunner()
    out = runner.invoke(app, ["backfill", "--config", str(path), "--start", str(DAYS5[3]),
                              "--end", str(DAYS5[4])])
    assert out.exit_code == 0, repr(out.exception)
    assert "skipped" in out.output or "labelled" in out.output
    out = runner.invoke(app, ["backfill", "--config", str(path), "--start", str(DAYS5[4]),
                              "--end", str(DAYS5[3])])
    assert out.exit_code == 2 and "before --start" in out.output


def test_retrain_mode_runs_the_nightly_flow_per_date(trained):
    config = trained
    later = RUN_DATE + dt.timedelta(days=1)
    rows = backfill(config=config, start=RUN_DATE, end=later, retrain=True)
    assert [r["status"] for r in rows] == ["retrained", "missing"]
    labels = storage.read_partition(config.labels_uri(), "ds", RUN_DATE)
    assert labels["id"].is_unique and len(labels) == 60
