"""Partition-wise validation and scoring over Dask: same labels as in process, bounded reads,
every row validated, labels replaced old-or-new at several row groups per partition."""

import datetime as dt
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from decflow import DeepEmbeddedClustering
from decflow.config import PipelineConfig
from decflow.data import partitioned, sources
from decflow.data.validation import DataValidationError, check
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.engine.payload import scatter_model
from decflow.errors import DataError
from decflow.model.features import FeatureEncoder
from decflow.model.scoring import score_frame
from testkit import DEC_FAST

DAYS = [dt.date(2026, 11, 20) + dt.timedelta(days=i) for i in range(3)]
ROWS, GROUP = 600, 50  # per partition; rows per row group


def _write_source(root, days=DAYS, bad=None) -> None:
    """Three blobs in (x, y) plus a 3-vector; ``bad=(day, row)`` puts a NaN in x there."""
    rng = np.random.default_rng(0)
    for i, day in enumerate(days):
        centre = np.repeat([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], ROWS // 3, axis=0)
        xy = centre + rng.normal(size=(ROWS, 2))
        if bad is not None and bad[0] == day:
            xy[bad[1], 0] = np.nan
        vec = pa.FixedSizeListArray.from_arrays(
            pa.array(rng.normal(size=ROWS * 3).astype(np.float32)), 3).cast(
            pa.list_(pa.float32()))
        table = pa.table({"id": np.arange(ROWS) + i * ROWS, "x": xy[:, 0], "y": xy[:, 1],
                          "v": vec, "unused": np.zeros(ROWS)})
        part = root / f"ds={day}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / "part-0.parquet", row_group_size=GROUP)


def _config(tmp_path, **compute) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "home": str(tmp_path / "home"),
        "source": {"uri": str(tmp_path / "source"), "window_days": 3},
        "features": {"numeric": ["x", "y"], "vector": {"v": 3}},
        "validation": {"min_rows": 10},
        "compute": {"n_workers": 1, "threads_per_worker": 2, "processes": False,
                    "chunk_rows": 120, "batch_rows": 40, **compute}})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    _write_source(root / "source")
    config = _config(root)
    scan = sources.scan_window(config.source, DAYS[-1])
    train = sources.sample_window(scan, 900, config.source_columns())
    encoder = FeatureEncoder(config.features)
    est = DeepEmbeddedClustering(3, **DEC_FAST).fit(encoder.fit_transform(train))
    return encoder, est


def _spec() -> scoring.LabelsSpec:
    return scoring.LabelsSpec("m", "7", "run", dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc))


def _label(config, model, day) -> scoring.PartitionOutcome:
    scan = sources.scan_window(config.source, day, 1)
    with dask_client(config.compute) as client:
        payload = scatter_model(client, model)
        return scoring.label_partition(client, scan, config, payload, _spec())


@pytest.mark.slow  # a Dask cluster
def test_a_model_larger_than_dask_s_large_graph_size_is_sent_without_its_warning(tmp_path):
    """The model travels in its task's graph once, by design (``scatter_model``): a model with
    wide layers (10 MB and more) used to print Dask's "Sending large graph" warning on every
    `decflow score`. The size is raised for that one submit only."""
    import warnings

    import dask

    from decflow.engine.payload import ModelPayload

    big = ModelPayload.of((b"{}", os.urandom(12 * 2**20)))
    config = _config(tmp_path)
    with dask_client(config.compute) as client:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            future = scatter_model(client, big)
            assert future.result() == big
        assert [str(w.message) for w in caught if "large graph" in str(w.message)] == []
        assert dask.config.get("distributed.admin.large-graph-warning-threshold") == "10MB"
        with pytest.warns(UserWarning, match="Sending large graph of size 12"):
            client.submit(len, big.estimator).result()  # Dask's own warning, elsewhere


def test_sample_window_is_proportional_and_reads_only_named_columns(tmp_path):
    _write_source(tmp_path / "source")
    (tmp_path / "source" / f"ds={DAYS[0]}" / "part-0.parquet").unlink()
    pq.write_table(pa.table({"id": np.arange(200) + 10_000, "x": np.zeros(200),
                             "y": np.zeros(200), "v": [[0.0] * 3] * 200}),
                   tmp_path / "source" / f"ds={DAYS[0]}" / "part-0.parquet", row_group_size=GROUP)
    config = _config(tmp_path)
    scan = sources.scan_window(config.source, DAYS[-1])
    assert scan.rows_per_partition() == {str(DAYS[0]): 200, str(DAYS[1]): ROWS,
                                         str(DAYS[2]): ROWS}
    sample = sources.sample_window(scan, 140, ["id", "x", "y", "v"], random_state=1)
    assert sample["ds"].value_counts().to_dict() == {str(DAYS[1]): 60, str(DAYS[2]): 60,
                                                     str(DAYS[0]): 20}
    assert "unused" not in sample and sample["id"].is_unique and len(sample) == 140
    again = sources.sample_window(scan, 140, ["id", "x", "y", "v"], random_state=1)
    pd.testing.assert_frame_equal(sample, again)


@pytest.mark.slow  # a Dask cluster
def test_scoring_over_a_cluster_matches_in_process_scoring(tmp_path, model):
    _write_source(tmp_path / "source")
    config = _config(tmp_path)
    out = _label(config, model, DAYS[1])
    assert out.validation_result.success and out.rows_written == ROWS
    # one row group per chunk: two 50-row groups fit in chunk_rows=120
    assert pq.ParquetFile(out.path).metadata.num_row_groups == ROWS // 100
    labels = partitioned.read_partition(config.labels_uri(), "ds", DAYS[1])
    source, _ = sources.load_window(config.source, DAYS[1], 1)
    expected = score_frame(*model, source)
    assert labels["id"].tolist() == source["id"].tolist()
    np.testing.assert_array_equal(labels["cluster_id"], expected["cluster_id"])
    # batches of 40 rows vs one batch: float32 sums in another order, last bits differ
    np.testing.assert_allclose(labels["confidence"], expected["confidence"], rtol=1e-5)
    np.testing.assert_allclose(labels["distance"], expected["distance"], rtol=1e-5)
    assert set(labels["model_version"]) == {"7"} and set(labels["run_id"]) == {"run"}
    # DESIGN.md §4's columns, types and order, though chunk tasks send only the first four
    assert [(f.name, str(f.type)) for f in pq.read_schema(out.path)] == [
        ("id", "int64"), ("cluster_id", "int32"), ("confidence", "float"),
        ("distance", "float"), ("model_name", "string"), ("model_version", "string"),
        ("run_id", "string"), ("labeled_at", "timestamp[us, tz=UTC]")]
    assert set(labels["model_name"]) == {"m"}
    assert set(pq.read_table(out.path)["labeled_at"].to_pylist()) == {_spec().labeled_at}
    # few distinct values: dictionary pages; ids and scores: plain pages, no dictionary tried
    meta = pq.ParquetFile(out.path).metadata
    encoded = {meta.schema.column(j).name for j in range(meta.num_columns)
               if "RLE_DICTIONARY" in meta.row_group(0).column(j).encodings}
    assert encoded == {"cluster_id", "model_name", "model_version", "run_id", "labeled_at"}


def test_a_chunk_task_sends_only_the_rows_own_columns(tmp_path, model):
    """The columns every labels row shares (model name and version, run, time) were three
    quarters of the bytes a chunk task sent the flow's process; the task now sends id, cluster
    id, confidence and distance, and the flow adds the rest (the file keeps DESIGN.md §4:
    ``test_scoring_over_a_cluster_matches_in_process_scoring``)."""
    from decflow.engine.payload import ModelPayload

    _write_source(tmp_path / "source")
    config = _config(tmp_path)
    scan = sources.scan_window(config.source, DAYS[1], 1)
    plan = scoring.make_plan(config, scan.n_rows, _spec())
    chunk = scan.chunks(config.compute.chunk_rows)[0]
    sent = scoring.process_chunk(chunk, plan, ModelPayload.of(model)).labels
    assert sent.column_names == ["id", "cluster_id", "confidence", "distance"]
    assert sent.num_rows == chunk.n_rows
    whole = scoring.model_columns(sent, plan.labels)
    frame = sources.load_window(config.source, DAYS[1], 1)[0].iloc[:chunk.n_rows]
    in_process = scoring.score_table(frame, model, plan)
    assert whole.schema == in_process.schema
    for name in ("id", "cluster_id", "model_name", "model_version", "run_id", "labeled_at"):
        assert whole[name].equals(in_process[name]), name
    # batches of 40 rows vs one batch: float32 sums in another order, last bits differ
    np.testing.assert_allclose(whole["distance"], in_process["distance"], rtol=1e-5)


@pytest.mark.slow  # a Dask cluster
def test_the_client_never_holds_the_window(tmp_path, model, monkeypatch):
    """Every frame read anywhere is at most one batch (40 rows) or one row group (50 rows),
    against a 1,800-row window; the whole-window reader is never called."""
    _write_source(tmp_path / "source")
    config = _config(tmp_path)
    largest = [0]
    read_chunk, read_row_group = sources.read_chunk, pq.ParquetFile.read_row_group

    def counted_chunk(*args, **kwargs):
        for frame in read_chunk(*args, **kwargs):
            largest[0] = max(largest[0], len(frame))
            yield frame

    def counted_group(self, *args, **kwargs):
        table = read_row_group(self, *args, **kwargs)
        largest[0] = max(largest[0], table.num_rows)
        return table

    def refuse(*args, **kwargs):
        raise AssertionError("the window was materialised")

    monkeypatch.setattr(sources, "read_chunk", counted_chunk)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted_group)
    monkeypatch.setattr(sources, "load_window", refuse)
    scan = sources.scan_window(config.source, DAYS[-1])
    assert scan.n_rows == 3 * ROWS
    with dask_client(config.compute) as client:
        report = check(scoring.validate_scan(client, scan, config))
    assert report.n_rows == 3 * ROWS
    sources.sample_window(scan, 300, ["id", "x", "y", "v"])
    assert _label(config, model, DAYS[2]).rows_written == ROWS
    assert 0 < largest[0] <= GROUP


@pytest.mark.slow  # a Dask cluster
def test_a_bad_row_in_the_last_batch_of_the_last_partition_fails(tmp_path, model):
    _write_source(tmp_path / "source", bad=(DAYS[-1], ROWS - 1))
    config = _config(tmp_path)
    scan = sources.scan_window(config.source, DAYS[-1])
    with dask_client(config.compute) as client:
        report = scoring.validate_scan(client, scan, config)
    with pytest.raises(DataValidationError) as err:
        check(report)
    msg = str(err.value)
    assert "expect_column_values_to_not_be_null on column 'x' in partition(s) " \
           f"ds={DAYS[-1]}" in msg
    assert f"1 of {3 * ROWS} rows are null or NaN" in msg
    assert f'{{"partition": "ds={DAYS[-1]}", "id": {3 * ROWS - 1}, "value": "nan"}}' in msg
    # scoring that partition writes nothing
    out = _label(config, model, DAYS[-1])
    assert not out.validation_result.success and out.rows_written == 0
    assert partitioned.read_partition(config.labels_uri(), "ds", DAYS[-1]) is None
    assert not os.path.exists(os.path.join(config.labels_uri(), f"ds={DAYS[-1]}"))


@pytest.mark.slow  # a Dask cluster
def test_each_partition_reports_where_its_tasks_time_went(tmp_path, model, caplog):
    """Labelling times every step of its chunk tasks (the model's share is how near scoring
    runs to the forward pass) and logs it with the partition; validation alone has two."""
    _write_source(tmp_path / "source")
    config = _config(tmp_path)
    t0 = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="decflow.engine.partitions"):
        out = _label(config, model, DAYS[0])
    wall = time.perf_counter() - t0
    assert out.validation_result.success and out.rows_written == ROWS
    assert sorted(out.steps) == sorted(scoring.STEPS) and min(out.steps.values()) > 0
    # two task threads: the steps cannot add up to more than both threads' time
    assert sum(out.steps.values()) < 2 * wall
    line = next(r.getMessage() for r in caplog.records if "rows validated" in r.getMessage())
    steps = scoring.describe_steps(out.steps)
    assert line.endswith(f"labels written to {out.path}; {steps}")

    scan = sources.scan_window(config.source, DAYS[0], 1)
    with dask_client(config.compute) as client:
        checked = scoring.run_partition(client, scan, scoring.make_plan(config, scan.n_rows),
                                        chunk_rows=120)
    assert sorted(checked.steps) == ["other", "read", "validate"]
    assert min(checked.steps.values()) > 0


def test_steps_are_described_by_share_largest_first():
    assert (scoring.describe_steps({"read": 1.0, "model": 8.0, "validate": 1.0})
            == "tasks 10.00 s: model 8.00 s (80%), read 1.00 s (10%), validate 1.00 s (10%)")


def test_score_table_counts_each_second_once(model):
    """The labels rows' time is what score_table spent besides score_frame's two steps: the
    three add up to no more than the call itself."""
    frame = pd.DataFrame({"id": [1, 2, 3], "x": [0.0, 6.0, 0.0], "y": [0.0, 0.0, 6.0],
                          "v": [[0.1, 0.2, 0.3]] * 3})
    plan = scoring.make_plan(_config(pathlib.Path("unused")), 3, _spec())
    steps = {}
    t0 = time.perf_counter()
    table = scoring.score_table(frame, model, plan, "ds=x", steps=steps)
    elapsed = time.perf_counter() - t0
    assert table.num_rows == 3
    assert sorted(steps) == ["features", "labels rows", "model"]
    assert min(steps.values()) > 0 and sum(steps.values()) <= elapsed


def test_score_frame_times_its_two_steps_without_changing_the_scores(model):
    encoder, est = model
    rows = pd.DataFrame({"x": [0.0, 6.0, 0.0], "y": [0.0, 0.0, 6.0],
                         "v": [[0.1, 0.2, 0.3]] * 3})
    steps = {"model": 1.0}
    timed = score_frame(encoder, est, rows, steps=steps)
    pd.testing.assert_frame_equal(timed, score_frame(encoder, est, rows))
    assert sorted(steps) == ["features", "model"]
    assert steps["features"] > 0 and steps["model"] > 1.0  # added to what was there


@pytest.mark.slow  # a Dask cluster
def test_duplicate_ids_across_partitions_are_found_exactly(tmp_path):
    _write_source(tmp_path / "source")
    part = tmp_path / "source" / f"ds={DAYS[2]}" / "part-0.parquet"
    table = pq.read_table(part)
    ids = table["id"].to_numpy().copy()
    ids[-1] = 5  # also in DAYS[0]
    pq.write_table(table.set_column(0, "id", pa.array(ids)), part, row_group_size=GROUP)
    config = _config(tmp_path)
    scan = sources.scan_window(config.source, DAYS[-1])
    with dask_client(config.compute) as client:
        plan = scoring.make_plan(config, scan.n_rows)
        plan = scoring.Plan(**{**plan.__dict__, "n_buckets": 3})  # several hash buckets
        result = scoring.run_partition(client, scan, plan, chunk_rows=120).validation_result
    unique = next(r for r in result.results if r.expectation.endswith("_unique"))
    assert not unique.success and unique.sample == [5]
    assert unique.details.startswith("2 rows share 1 duplicated id value(s)")
    assert unique.partitions == [f"ds={DAYS[0]}", f"ds={DAYS[2]}"]


@pytest.mark.slow  # a Dask cluster
def test_labels_are_replaced_old_or_new_at_several_row_groups(tmp_path, model, monkeypatch):
    """A reader in the middle of a rewrite (after the first of 6 row groups) sees the old
    partition whole; afterwards the new one, once: through pyarrow, pandas and DuckDB."""
    _write_source(tmp_path / "source")
    config = _config(tmp_path)
    first = _label(config, model, DAYS[0])
    old = partitioned.read_partition(config.labels_uri(), "ds", DAYS[0])
    assert first.rows_written == ROWS
    mid, go, writes = threading.Event(), threading.Event(), [0]
    write = partitioned.PartitionWriter.write

    def paused(self, table):
        write(self, table)
        writes[0] += 1
        if writes[0] == 1:
            mid.set()
            assert go.wait(timeout=60)

    monkeypatch.setattr(partitioned.PartitionWriter, "write", paused)
    spec = scoring.LabelsSpec("m", "8", "run2", dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc))
    result = {}

    def rewrite():
        scan = sources.scan_window(config.source, DAYS[0], 1)
        with dask_client(config.compute) as client:
            payload = scatter_model(client, model)
            result["out"] = scoring.label_partition(client, scan, config, payload, spec)

    worker = threading.Thread(target=rewrite)
    worker.start()
    try:
        assert mid.wait(timeout=120)
        during = partitioned.read_dataset(config.labels_uri(), "ds")
        assert len(during) == ROWS and set(during["model_version"]) == {"7"}
        pd.testing.assert_frame_equal(
            partitioned.read_partition(config.labels_uri(), "ds", DAYS[0]), old)
    finally:
        go.set()
        worker.join()
    assert result["out"].rows_written == ROWS
    root = config.labels_uri()
    via_arrow = pads.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()
    via_pandas = pd.read_parquet(root)
    via_duckdb = duckdb.sql(f"select id, model_version from read_parquet('{root}/*/*.parquet', "
                            "hive_partitioning = true)").df()
    for frame in (via_arrow, via_pandas, via_duckdb):
        assert len(frame) == ROWS and frame["id"].is_unique
        assert set(frame["model_version"]) == {"8"}
    assert pq.ParquetFile(result["out"].path).metadata.num_row_groups == ROWS // 100
    assert [f for f in os.listdir(os.path.join(root, f"ds={DAYS[0]}"))] == ["part-0.parquet"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a Dask scheduler and worker as processes
def test_an_existing_scheduler_does_the_work(tmp_path, model, caplog):
    """compute.dask_address: a real `dask scheduler` and `dask worker` (separate processes that
    import decflow themselves) validate and label a partition; labels as in process."""
    import subprocess
    import sys

    import distributed

    _write_source(tmp_path / "source")
    address = f"tcp://127.0.0.1:{_free_port()}"
    dashboard = f"127.0.0.1:{_free_port()}"  # the HTTP port (/health, /metrics) off 0.0.0.0:8787
    run = [sys.executable, "-m"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([*run, "distributed.cli.dask_scheduler", "--host",
                               "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               "--dashboard-address", dashboard], env=env,
                              stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([*run, "distributed.cli.dask_worker", address,
                                       "--nthreads", "1", "--no-dashboard", "--host",
                                       "127.0.0.1"], env=env, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            worker_pids = set(client.run(os.getpid).values())
        assert os.getpid() not in worker_pids
        config = _config(tmp_path, dask_address=address)
        with caplog.at_level(logging.INFO, logger="decflow.engine.compute"):
            out = _label(config, model, DAYS[0])
        assert (f"Dask: the scheduler {address} with 1 worker, dashboard http://{dashboard}"
                f"/status") in [r.getMessage() for r in caplog.records]
        assert out.validation_result.success and out.rows_written == ROWS
        labels = partitioned.read_partition(config.labels_uri(), "ds", DAYS[0])
        source, _ = sources.load_window(config.source, DAYS[0], 1)
        np.testing.assert_array_equal(labels["cluster_id"],
                                      score_frame(*model, source)["cluster_id"])
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def _rewrite(part, change) -> None:
    table = change(pq.read_table(part))
    pq.write_table(table, part, row_group_size=GROUP)


@pytest.mark.slow  # a Dask cluster
@pytest.mark.parametrize("change, expected", [
    # a column missing from one file used to become nulls there (and pass as categories)
    (lambda t: t.drop_columns(["x"]),
     r"column 'x' is missing from ds=2026-11-21/part-0.parquet \(present in "
     r"ds=2026-11-20/part-0.parquet"),
    # numbers stored as text in one file used to be cast on window reads only
    (lambda t: t.set_column(1, "x", pa.array([str(v) for v in t["x"].to_pylist()])),
     r"column 'x' is double in ds=2026-11-20/part-0.parquet but string in "
     r"ds=2026-11-21/part-0.parquet"),
], ids=["missing-in-one-file", "text-numbers-in-one-file"])
def test_files_of_one_window_must_agree_on_the_columns(tmp_path, model, change, expected):
    """Defect 4: the dataset's schema came from its first file, so files disagreeing with it
    were silently coerced. Validation, labelling and the training sample refuse them."""
    _write_source(tmp_path / "source")
    _rewrite(tmp_path / "source" / f"ds={DAYS[1]}" / "part-0.parquet", change)
    config = _config(tmp_path)
    scan = sources.scan_window(config.source, DAYS[-1])
    with dask_client(config.compute) as client:
        with pytest.raises(DataError, match=expected):
            scoring.validate_scan(client, scan, config)
    with pytest.raises(DataError, match=expected):
        sources.sample_window(scan, 100, config.source_columns())
    # the first file lacking the column: it must not vanish for all files
    _rewrite(tmp_path / "source" / f"ds={DAYS[0]}" / "part-0.parquet",
             lambda t: t.drop_columns(["y"]))
    scan = sources.scan_window(config.source, DAYS[-1])
    with pytest.raises(DataError, match=r"column 'y' is missing from ds=2026-11-20/"):
        scan.check_columns(["id", "y", "v"])


@pytest.mark.slow  # a Dask cluster
@pytest.mark.parametrize("n", [140, 5000], ids=["a sample", "every row"])
def test_validation_takes_the_training_sample_from_the_rows_it_reads(tmp_path, monkeypatch, n):
    """The nightly reads its window once: the chunks that validate it return the sampled rows,
    the same rows, columns and order as ``sources.sample_window``; no row group is read
    again for them."""
    _write_source(tmp_path / "source")
    (tmp_path / "source" / f"ds={DAYS[0]}" / "part-0.parquet").unlink()
    pq.write_table(pa.table({"id": np.arange(200) + 10_000, "x": np.zeros(200),
                             "y": np.zeros(200), "v": [[0.0] * 3] * 200,
                             "unused": np.zeros(200)}),
                   tmp_path / "source" / f"ds={DAYS[0]}" / "part-0.parquet", row_group_size=GROUP)
    config = _config(tmp_path).model_copy(update={"train": PipelineConfig().train.model_copy(
        update={"max_train_rows": n, "random_state": 3})})
    scan = sources.scan_window(config.source, DAYS[-1])
    expected = sources.training_sample(scan, config)

    def refuse(*args, **kwargs):
        raise AssertionError("a row group was read again for the sample")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", refuse)
    with dask_client(config.compute) as client:
        report, sample = scoring.validate_and_sample(client, scan, config)
    assert report.success and report.n_rows == scan.n_rows
    assert len(sample) == min(n, scan.n_rows)
    pd.testing.assert_frame_equal(sample, expected)



# Run in a fresh process (the client's imports are the point); its scheduler runs there too.
_LABEL_SCRIPT = """
import pickle, sys
import distributed
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.engine.payload import scatter_model


class ChunksPerWorker(distributed.diagnostics.plugin.SchedulerPlugin):
    # the most chunk tasks assigned to one worker at once, and the worker of each chunk
    def __init__(self):
        self.now, self.most, self.ran = {}, 0, []

    async def start(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if not str(key).startswith("process_chunk"):
            return
        if finish == "processing":
            worker = self.scheduler.tasks[key].processing_on.address
            self.now[key] = worker
            self.ran.append(worker)
            self.most = max(self.most, sum(w == worker for w in self.now.values()))
        elif start == "processing":
            self.now.pop(key, None)


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        config, scan, model, spec = pickle.load(f)
    with dask_client(config.compute) as client:
        client.register_plugin(ChunksPerWorker(), name="chunks")
        payload = scatter_model(client, model)
        out = scoring.label_partition(client, scan, config, payload, spec)
        most, ran = client.run_on_scheduler(
            lambda dask_scheduler: (dask_scheduler.plugins["chunks"].most,
                                    dask_scheduler.plugins["chunks"].ran))
    gx = sorted(m for m in sys.modules if m.startswith("great_expectations"))
    print("RESULT", out.validation_result.success, out.rows_written, most, len(set(ran)),
          len(ran), gx[:3])
"""


@pytest.mark.slow  # a Dask cluster of two worker processes, in a fresh process
def test_each_worker_runs_one_chunk_at_a_time_and_the_client_never_imports_gx(tmp_path, model):
    """A chunk queued on a busy one-thread worker holds up the small tasks that hand the
    previous chunk's results to the client, and Dask placed new chunks on busy workers while
    another stood idle: each worker gets one chunk at a time. The client merges the batches
    with the suite's specs built on a worker: labelling a partition does not import Great
    Expectations in the client's process (about 2 s on the critical path)."""
    _write_source(tmp_path / "source")
    config = _config(tmp_path, n_workers=2, threads_per_worker=1, processes=True,
                     chunk_rows=100)
    scan = sources.scan_window(config.source, DAYS[1], 1)
    assert len(scan.chunks(100)) == 6
    (tmp_path / "inputs.pkl").write_bytes(pickle.dumps((config, scan, model, _spec())))
    (tmp_path / "label.py").write_text(_LABEL_SCRIPT)
    done = subprocess.run([sys.executable, str(tmp_path / "label.py"),
                           str(tmp_path / "inputs.pkl")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    # passed, all rows labelled, at most 1 chunk per worker at once, both workers, 6 chunks
    assert lines[0] == f"RESULT True {ROWS} 1 2 6 []", lines[0]
