"""Backfill: per-partition validate -> score -> write; resumable, idempotent, concurrent-safe.

One training run for the whole module, made by the retrain mode itself (module fixture). Each
test starts from a clean source (the corrupt partition is corrupted and repaired inside the tests
that need it) and, where it matters, from an empty labels dataset, so tests run in any order.
"""

import datetime as dt
import os
import shutil
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.exceptions import ParameterTypeError
from typer.testing import CliRunner

from decflow.config import dump_config
from decflow.data import partitioned, sources
from decflow.engine import partitions as scoring
from decflow.registry.versions import get_version
from flowkit import RUN_DATE, latest_artifact, make_rows, tiny_config
from decflow.flows.backfill import BackfillFailed, backfill
from decflow.flows.cli import app

DAYS5 = [RUN_DATE - dt.timedelta(days=i) for i in range(4, -1, -1)]
CORRUPT = DAYS5[1]  # outside the training window of RUN_DATE (the last 3 days)
LATER = RUN_DATE + dt.timedelta(days=1)  # no source partition
NULL_X = "expect_column_values_to_not_be_null on column 'x'"


def _write_day(uri: str, day: dt.date, corrupt: bool = False) -> None:
    i = DAYS5.index(day)
    cols = make_rows(60, i * 60, seed=i)
    if corrupt:
        cols["x"][4] = np.nan
    arrays = {k: (pa.array([list(map(float, e)) for e in v], pa.list_(pa.float32()))
                  if k == "emb" else pa.array(v)) for k, v in cols.items()}
    partitioned.write_partition(uri, "ds", day, pa.table(arrays))


def _clear_labels(config) -> None:
    shutil.rmtree(config.labels_uri(), ignore_errors=True)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """Retrain mode over DAYS5[2]..LATER with CORRUPT corrupt: DAYS5[2] and DAYS5[3] have it in
    their window and fail validation before training, RUN_DATE trains (version 1, champion),
    LATER is missing. Then the source is repaired."""
    home = tmp_path_factory.mktemp("bf")
    source = str(home / "source")
    for day in DAYS5:
        _write_day(source, day, corrupt=day == CORRUPT)
    config = tiny_config(home, source)
    with pytest.raises(BackfillFailed) as err:
        backfill(config=config, start=DAYS5[2], end=LATER, retrain=True)
    _write_day(source, CORRUPT)
    return config, err.value.rows


_MEET: dict = {}  # state of `_rendezvous` (tasks are pickled by reference, even in-process)
_MEET_LOCK = threading.Lock()


def _rendezvous(*args, **kwargs):
    """``scoring.process_chunk``, but the first two calls wait for each other."""
    with _MEET_LOCK:
        _MEET["calls"] += 1
        first = _MEET["calls"] <= 2
    if first:
        _MEET["barrier"].wait()
    return _MEET["process_chunk"](*args, **kwargs)


def _files(config) -> dict[str, int]:
    out = {}
    for root, _, files in os.walk(config.labels_uri()):
        for f in files:
            p = os.path.join(root, f)
            out[p] = os.stat(p).st_mtime_ns
    return out


def _check_consistent(config, days) -> None:
    """One row per source row, unique ids, one model version per partition, no temporaries."""
    labels = partitioned.read_dataset(config.labels_uri(), "ds")
    for day in days:
        part = labels[labels["ds"] == day.isoformat()]
        source, _ = sources.load_window(config.source, day, 1)
        assert len(part) == len(source) and part["id"].is_unique
        assert set(part["id"]) == set(source["id"])
        assert part["model_version"].nunique() == 1
    leftovers = [p for p in _files(config) if os.path.basename(p).startswith(".")]
    assert leftovers == []



def test_retrain_mode_runs_the_nightly_flow_per_date(retrained):
    config, rows = retrained
    assert [(r["date"], r["status"]) for r in rows] == [
        (DAYS5[2].isoformat(), "failed"), (DAYS5[3].isoformat(), "failed"),
        (RUN_DATE.isoformat(), "labelled"), (LATER.isoformat(), "missing")]
    assert NULL_X in rows[0]["detail"] and NULL_X in rows[1]["detail"]
    assert "retrained: version 1 registered" in rows[2]["detail"] and rows[2]["rows"] == 60
    assert get_version(config.tracking_uri(), "tiny", "champion").version == 1


def test_backfill_labels_good_partitions_and_reports_the_corrupt_one(retrained, monkeypatch):
    config, _ = retrained
    _clear_labels(config)
    _write_day(config.source.uri, CORRUPT, corrupt=True)
    # The first two chunk tasks wait for each other: the backfill only gets past them if the
    # cluster runs two partitions' chunks at the same time (the in-process cluster has two
    # threads; each 60-row partition is one chunk), not one partition after the other.
    meet = threading.Barrier(2, timeout=60)
    _MEET.update(barrier=meet, calls=0, process_chunk=scoring.process_chunk)

    try:
        with monkeypatch.context() as m:
            m.setattr(scoring, "process_chunk", _rendezvous)
            state = backfill(config=config, start=DAYS5[0], end=DAYS5[-1], return_state=True)
        assert state.is_failed()
        assert not meet.broken and _MEET["calls"] == 5
        err = state.result(raise_on_failure=False)
        assert isinstance(err, BackfillFailed)
        rows = {r["date"]: r for r in err.rows}
        assert [r["status"] for r in err.rows].count("labelled") == 4
        bad = rows[CORRUPT.isoformat()]
        assert bad["status"] == "failed" and NULL_X in bad["detail"]
        assert CORRUPT.isoformat() in str(err) and NULL_X in str(err)
        artifact = latest_artifact("backfill-summary")
        assert CORRUPT.isoformat() in artifact and "failed" in artifact and NULL_X in artifact
        assert partitioned.read_partition(config.labels_uri(), "ds", CORRUPT) is None
        _check_consistent(config, [d for d in DAYS5 if d != CORRUPT])

        # rerun: the 4 are skipped (files untouched), the corrupt one is retried and fails again
        before = _files(config)
        with pytest.raises(BackfillFailed) as again:
            backfill(config=config, start=DAYS5[0], end=DAYS5[-1])
        statuses = {r["date"]: r["status"] for r in again.value.rows}
        assert statuses[CORRUPT.isoformat()] == "failed"
        assert sorted(statuses.values()) == ["failed"] + ["skipped"] * 4
        assert _files(config) == before
    finally:
        _write_day(config.source.uri, CORRUPT)

    # once the source is fixed, the rerun labels only that partition
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


def test_missing_partition_is_reported_not_fatal(retrained):
    config, _ = retrained
    # force: RUN_DATE is labelled whatever earlier tests of the module left there
    state = backfill(config=config, start=RUN_DATE, end=LATER, force=True, return_state=True)
    assert state.is_completed()
    by_date = {r["date"]: r for r in state.result()}
    assert by_date[LATER.isoformat()]["status"] == "missing"
    assert by_date[RUN_DATE.isoformat()]["status"] == "labelled"
    assert partitioned.read_partition(config.labels_uri(), "ds", LATER) is None


def test_two_concurrent_backfills_never_write_a_partition_twice(retrained, monkeypatch):
    """Backfill A holds its first labels write until backfill B has written. B writes only the
    day A does not hold and reports each overlapping day as failed, naming the conflict; A
    labels all of its days; a rerun of B then finds its days done. (B starts once A runs: the
    test harness's SQLite server answers flow runs created in the same instant with 503 and
    the client backs off, which would serialise the two runs.)"""
    from prefect.runtime import flow_run

    config, _ = retrained
    first_run, a_writing, b_writing = [], threading.Event(), threading.Event()
    written, lock = [], threading.Lock()
    write = partitioned.PartitionWriter.write

    def contended_write(self, table):
        with lock:
            first_run[:] = first_run or [flow_run.id]
            is_a = first_run[0] == flow_run.id
            written.append(("A" if is_a else "B", str(self.path)))
        (a_writing if is_a else b_writing).set()
        if is_a:
            assert b_writing.wait(timeout=120)
        return write(self, table)

    monkeypatch.setattr(partitioned.PartitionWriter, "write", contended_write)
    errors, results = [], {}

    def run(name, start, end):
        try:
            results[name] = backfill(config=config, start=start, end=end, force=True)
        except BackfillFailed as exc:
            errors.append(exc)
            results[name] = exc.rows
        finally:
            a_writing.set()

    a = threading.Thread(target=run, args=("A", DAYS5[0], DAYS5[3]))
    b = threading.Thread(target=run, args=("B", DAYS5[1], DAYS5[4]))
    a.start()
    assert a_writing.wait(timeout=120)
    b.start()
    a.join()
    b.join()
    assert [r["status"] for r in results["A"]] == ["labelled"] * 4
    assert [r["status"] for r in results["B"]] == ["failed"] * 3 + ["labelled"]
    for row, day in zip(results["B"][:3], DAYS5[1:4]):
        assert row["detail"].startswith(f"Conflict: a run writing the labels of {day} is in "
                                        f"progress elsewhere")
    assert len(errors) == 1 and "3 failed" in str(errors[0])
    b_paths = [p for who, p in written if who == "B"]
    assert len(b_paths) == 1 and f"ds={DAYS5[4]}" in b_paths[0]  # never a day A was writing
    files = list(_files(config))
    assert sorted(os.path.relpath(p, config.labels_uri()) for p in files) == \
        sorted(f"ds={d}/part-0.parquet" for d in DAYS5)
    for p in files:
        pq.read_table(p)  # every file complete and readable
    _check_consistent(config, DAYS5)
    monkeypatch.undo()
    rerun = backfill(config=config, start=DAYS5[1], end=DAYS5[4])
    assert [r["status"] for r in rerun] == ["skipped"] * 4


def test_cli_backfill(retrained, tmp_path):
    config, _ = retrained
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    runner = CliRunner()
    out = runner.invoke(app, ["backfill", "--help"])
    assert out.exit_code == 0
    for option in ("--start", "--end", "--model", "--force", "--retrain"):
        assert option in out.output

    base = ["backfill", "--config", str(path)]
    out = runner.invoke(app, base + ["--start", str(DAYS5[3]), "--end", str(DAYS5[4]),
                                     "--model", "1", "--force"])
    assert out.exit_code == 0, repr(out.exception)
    assert out.output.count("labelled") == 2 and str(DAYS5[3]) in out.output

    _write_day(config.source.uri, CORRUPT, corrupt=True)
    try:
        out = runner.invoke(app, base + ["--start", str(CORRUPT), "--end", str(CORRUPT),
                                     "--force"])
    finally:
        _write_day(config.source.uri, CORRUPT)
    assert out.exit_code == 1 and "1 failed" in out.output and NULL_X in out.output

    for args, message in (
            (["--start", str(DAYS5[4]), "--end", str(DAYS5[3])], "before --start"),
            (["--start", "2026-11-32", "--end", str(DAYS5[3])], "is not a date"),
            (["--start", str(DAYS5[3]), "--end", str(DAYS5[4]), "--model", "9"],
             "no version or alias '9'"),
            (["--start", str(DAYS5[3]), "--end", str(DAYS5[4]), "--retrain", "--force"],
             "do not apply")):
        out = runner.invoke(app, base + args)
        assert out.exit_code == 2 and message in out.output, out.output


def test_backfill_validates_its_parameters():
    params = backfill.validate_parameters({"config": {}, "start": "2026-11-17",
                                           "end": "2026-11-21", "force": "true"})
    assert params["start"] == dt.date(2026, 11, 17) and params["force"] is True
    with pytest.raises(ParameterTypeError, match=r"config\.model\.n_clusterz: Extra inputs"):
        backfill.validate_parameters({"config": {"model": {"n_clusterz": 5}},
                                      "start": "2026-11-17", "end": "2026-11-21"})


def test_an_unreadable_file_fails_its_day_only(retrained):
    config, _ = retrained
    path = os.path.join(config.source.uri, f"ds={DAYS5[0]}", "part-0.parquet")
    try:
        with open(path, "wb") as f:
            f.write(b"not a parquet file")
        with pytest.raises(BackfillFailed) as err:
            backfill(config=config, start=DAYS5[0], end=DAYS5[1], force=True)
        rows = {r["date"]: r for r in err.value.rows}
        bad, good = rows[DAYS5[0].isoformat()], rows[DAYS5[1].isoformat()]
        assert bad["status"] == "failed" and "Parquet magic bytes not found" in bad["detail"]
        assert good["status"] == "labelled" and good["rows"] == 60
    finally:
        _write_day(config.source.uri, DAYS5[0])
