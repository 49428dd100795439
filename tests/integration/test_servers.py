"""Each real server of the integration tier answers and does its job."""

from __future__ import annotations

import json
import operator
import os
import textwrap
import time
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect import flow

pytestmark = pytest.mark.integration


def test_postgres_table_roundtrip(postgres_server):
    assert set(postgres_server.databases) == {"mlflow", "prefect"}
    conn = postgres_server.connect("postgres")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE it_probe (id int PRIMARY KEY, name text NOT NULL)")
            cur.executemany("INSERT INTO it_probe VALUES (%s, %s)", [(1, "a"), (2, "b")])
        with conn, conn.cursor() as cur:
            cur.execute("SELECT id, name FROM it_probe ORDER BY id")
            assert cur.fetchall() == [(1, "a"), (2, "b")]
            cur.execute("SELECT current_user, inet_server_addr()::text")
            assert cur.fetchone() == ("decflow", "127.0.0.1/32")
            cur.execute("DROP TABLE it_probe")
    finally:
        conn.close()


def test_s3_parquet_roundtrip_with_pyarrow(s3_environ):
    from pyarrow import fs

    # what the pipeline does with an s3:// URI: everything comes from the environment
    filesystem, path = fs.FileSystem.from_uri("s3://decflow/it/roundtrip/part-0.parquet")
    table = pa.table({"id": [1, 2, 3], "x": [0.5, 1.5, 2.5]})
    pq.write_table(table, path, filesystem=filesystem)
    assert pq.read_table(path, filesystem=filesystem).equals(table)

    keys = [o["Key"] for o in s3_environ.boto3_client().list_objects_v2(
        Bucket="decflow", Prefix="it/roundtrip/").get("Contents", [])]
    assert keys == ["it/roundtrip/part-0.parquet"]
    filesystem.delete_dir("decflow/it/roundtrip")


def test_mlflow_artifact_lands_in_the_bucket(mlflow_server, s3_server, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    exp_id = client.create_experiment(f"it-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "k", 4)
    client.log_metric(run.info.run_id, "acc", 0.9)
    artifact = tmp_path / "hello.json"
    artifact.write_text(json.dumps({"hello": "s3"}))
    client.log_artifact(run.info.run_id, str(artifact), artifact_path="probe")
    client.set_terminated(run.info.run_id)

    got = client.get_run(run.info.run_id)
    assert got.data.params == {"k": "4"} and got.data.metrics == {"acc": 0.9}
    assert got.info.status == "FINISHED"
    # the server proxied the upload to SeaweedFS
    prefix = f"artifacts/{exp_id}/{run.info.run_id}/"
    keys = [o["Key"] for o in s3_server.boto3_client().list_objects_v2(
        Bucket="mlflow", Prefix=prefix).get("Contents", [])]
    assert keys == [prefix + "artifacts/probe/hello.json"], keys
    local = client.download_artifacts(run.info.run_id, "probe/hello.json", str(tmp_path / "dl"))
    assert json.loads(open(local).read()) == {"hello": "s3"}


@flow(name="it-trivial-flow", persist_result=False)
def trivial_flow(x: int) -> int:
    return x * 2


def _post(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_prefect_flow_run_recorded_on_the_server(prefect_server):
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The process may already have Prefect settings (tests/flows' ephemeral harness, say):
    # point it at the real server for the duration of the run only.
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        state = trivial_flow(21, return_state=True)
        APILogWorker.drain_all(timeout=10)  # ship the run's logs now, while the server is up
    assert state.is_completed() and state.result() == 42
    run_id = str(state.state_details.flow_run_id)
    runs = _post(f"{prefect_server.api_url}/flow_runs/filter",
                 {"flows": {"name": {"any_": ["it-trivial-flow"]}}})
    assert [(r["id"], r["state"]["type"], r["parameters"]) for r in runs] == [
        (run_id, "COMPLETED", {"x": 21})]
    logs = _post(f"{prefect_server.api_url}/logs/filter",
                 {"logs": {"flow_run_id": {"any_": [run_id]}}})
    assert any("Finished in state Completed" in log["message"] for log in logs), logs


def test_dask_cluster_runs_tasks_on_two_workers(dask_cluster, s3_server):
    from distributed import Client

    with Client(dask_cluster.address, timeout=30) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
        assert sorted(client.run(os.getpid).values()) == sorted(
            w.pid for w in dask_cluster.workers)
        futures = [client.submit(operator.mul, i, 10, workers=[addr], pure=False)
                   for i, addr in enumerate(workers)]
        assert client.gather(futures) == [0, 10]

        # the workers get the test's S3 env and import the project
        endpoints = client.run(lambda: os.environ.get("AWS_ENDPOINT_URL"))
        assert set(endpoints.values()) == {s3_server.url}
        assert set(client.run(lambda: __import__("decflow").__name__).values()) == {"decflow"}

        # ... so they read s3:// sources (pyarrow resolves the URI from that env)
        table = pa.table({"id": list(range(5))})
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        s3_server.boto3_client().put_object(Bucket="decflow", Key="it/dask/part-0.parquet",
                                            Body=buf.getvalue().to_pybytes())
        rows = client.run(lambda: __import__("pyarrow.parquet").parquet.read_table(
            "s3://decflow/it/dask/part-0.parquet").num_rows)
        assert set(rows.values()) == {5}


def test_prefect_process_worker_runs_a_deployment(prefect_server, prefect_worker, s3_server,
                                                 tmp_path):
    from prefect.deployments import run_deployment
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pool = f"it-{uuid.uuid4().hex[:6]}"
    worker = prefect_worker(pool=pool, env=s3_server.env)
    assert worker.pid > 0 and worker.pool == pool

    (tmp_path / "hello.py").write_text(textwrap.dedent("""
        import os
        from prefect import flow

        @flow(name="it-worker-flow")
        def hello(endpoint: str) -> str:
            # runs in a subprocess of the worker, with the env given to the worker
            assert os.environ["AWS_ENDPOINT_URL"] == endpoint, os.environ.get("AWS_ENDPOINT_URL")
            return "ok"
    """))
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        deployment_id = flow.from_source(str(tmp_path), "hello.py:hello").deploy(
            name="it", work_pool_name=pool, print_next_steps=False, ignore_warnings=True)
        t0 = time.monotonic()
        run = run_deployment(deployment_id, parameters={"endpoint": s3_server.url},
                             timeout=120, poll_interval=1, as_subflow=False)
        APILogWorker.drain_all(timeout=10)
    assert run.state.type.value == "COMPLETED", (run.state, worker.process.log_tail())
    assert time.monotonic() - t0 < 120  # not a timed-out wait
