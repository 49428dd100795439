"""The nightly deployment for real: `decflow deploy` of a user's config onto a Prefect server on
PostgreSQL, run by a `prefect worker` process from a work pool, with the source and labels in an
S3 bucket (SeaweedFS), MLflow on PostgreSQL with artifacts in the bucket, and validation, k-means
and scoring on a two-worker Dask cluster. Then a second night and a rollback on the same
servers. Nothing here is embedded: every server is its own process (see conftest.py)."""

import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import distributed
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

import api
import servers
from decflow.config import dump_config
from decflow.data.synthetic import generate_source, synthetic_config

NIGHT_1 = dt.date(2026, 11, 21)
NIGHT_2 = NIGHT_1 + dt.timedelta(days=1)
ROWS_PER_DAY = 400
MODEL = "it-nightly"
POOL = "decflow-it-nightly"
RUN_TIMEOUT = 420  # seconds for one deployed run to reach a final state


def decflow(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """The `decflow` command in its own process, as a user runs it."""
    return subprocess.run([servers._script("decflow"), *args], env=servers.child_env(env),
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def wait_for_final_state(api_url: str, flow_run_id: str) -> dict:
    """Poll the server until the flow run is in a final state (or fail with its state)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = api.get(api_url, f"flow_runs/{flow_run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        assert time.monotonic() < deadline, f"flow run still {run['state']} after {RUN_TIMEOUT} s"
        time.sleep(2)


def run_deployment(api_url: str, name: str, parameters: dict) -> dict:
    deployment = api.get(api_url, f"deployments/name/{name}")
    run = api.post(api_url, f"deployments/{deployment['id']}/create_flow_run",
                   {"parameters": parameters})
    return wait_for_final_state(api_url, run["id"])


def executed_per_worker(address: str) -> dict[str, int]:
    """Tasks each Dask worker has run since it started (asked of the workers themselves)."""
    with distributed.Client(address, timeout=30) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def task_prefixes(address: str) -> set[str]:
    """Names of every kind of task the scheduler has seen (function names)."""
    with distributed.Client(address, timeout=30) as client:
        return set(client.run_on_scheduler(lambda dask_scheduler: list(
            dask_scheduler.task_prefixes)))


@pytest.fixture(scope="module")
def stack(s3_server, mlflow_server, prefect_server, dask_cluster, tmp_path_factory):
    """A user's table in the bucket and their config, deployed with `decflow deploy`."""
    work = tmp_path_factory.mktemp("nightly")
    old = {k: os.environ.get(k) for k in s3_server.env}
    os.environ.update(s3_server.env)  # pyarrow in this process writes the source table
    try:
        generate_source("s3://decflow/it/source", rows=3 * ROWS_PER_DAY, days=3,
                        end_date=NIGHT_1, n_clusters=4, vector_length=16, rows_per_group=250)
        generate_source("s3://decflow/it/source", rows=ROWS_PER_DAY, days=1,
                        end_date=NIGHT_2, n_clusters=4, vector_length=16, seed=1)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    config = synthetic_config(
        "s3://decflow/it/source", home=str(work / "home"), n_clusters=4, vector_length=16,
        labels={"uri": "s3://decflow/it/labels"},
        registry={"tracking_uri": mlflow_server.url, "model_name": MODEL,
                  "experiment": "from-the-config"},
        compute={"dask_address": dask_cluster.address, "chunk_rows": 250, "batch_rows": 128},
        # a small model and two views: what is tested here is the servers, not the method
        model={"n_components": 4, "hidden": [32, 32], "init_views": 2},
        train={"pretrain_epochs": 4, "max_iter": 30, "batch_size": 64, "random_state": 0},
        kmeans={"n_init": 3, "chunk_rows": 300},
        validation={"min_rows": 100},
        # the second night's model must be promoted, so that a rollback has something to undo
        promotion={"min_cluster_ratio": 0.0, "max_silhouette_drop": 1.0,
                   "max_confidence_drop": 1.0, "max_supervised_drop": 1.0})
    (work / "my.yaml").write_text(dump_config(config))
    out = decflow(["deploy", "--config", "my.yaml", "--work-pool", POOL],
                  prefect_server.env, work)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"deployed recluster/nightly on work pool {POOL!r}" in out.stdout
    return {"work": work, "config": config}


@pytest.fixture(scope="module")
def worker(stack, s3_server, prefect_server, mlflow_server):
    """A process worker in a directory without the project's checkout: the flows come from the
    installed package. Its environment carries the S3 keys and one DECFLOW_* override."""
    run_dir = stack["work"] / "worker-cwd"
    run_dir.mkdir()
    w = servers.start_prefect_worker(prefect_server.api_url, POOL, env={
        **s3_server.env, "DECFLOW_REGISTRY__EXPERIMENT": "from-the-worker"}, cwd=run_dir)
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def night_1(stack, worker, prefect_server):
    return run_deployment(prefect_server.api_url, "recluster/nightly",
                          {"run_date": NIGHT_1.isoformat()})


def _mlflow(mlflow_server) -> MlflowClient:
    return MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)


def test_the_nightly_run_completes_on_the_server_named_and_linked(night_1, prefect_server,
                                                                   mlflow_server):
    assert night_1["state"]["type"] == "COMPLETED", \
        api.log_text(prefect_server.api_url, night_1["id"])[-5000:]
    assert night_1["name"] == f"recluster-{NIGHT_1}"
    links = {a["key"]: a for a in api.artifacts(prefect_server.api_url, night_1["id"])}
    run = _mlflow(mlflow_server).search_runs(
        [_mlflow(mlflow_server).get_experiment_by_name("from-the-worker").experiment_id],
        f"tags.`prefect.flow_run_id` = '{night_1['id']}'")[0]
    assert run.info.status == "FINISHED" and run.info.run_name == night_1["name"]
    assert run.data.tags["prefect.deployment"] == "recluster/nightly"
    assert f"/runs/{run.info.run_id})" in links["mlflow-run"]["data"]
    assert f"/models/{MODEL}/versions/1)" in links["mlflow-model-version"]["data"]
    logs = api.log_text(prefect_server.api_url, night_1["id"])
    assert "the worker's environment sets registry.experiment" in logs
    assert "k-means done" in logs and "pretraining epoch" in logs
    assert f"ds={NIGHT_1}: {ROWS_PER_DAY} rows validated, {ROWS_PER_DAY} labels written" in logs


def test_the_model_version_and_its_artifacts_are_on_the_servers(night_1, mlflow_server,
                                                                s3_server):
    client = _mlflow(mlflow_server)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "1"
    assert version.tags["data.n_rows"] == str(3 * ROWS_PER_DAY)
    # artifacts live in the bucket, written through the MLflow server's proxy
    keys = [o["Key"] for page in s3_server.boto3_client().get_paginator(
        "list_objects_v2").paginate(Bucket="mlflow") for o in page.get("Contents", [])]
    assert any(k.endswith(f"{version.run_id}/artifacts/config.yaml") for k in keys), keys[:20]
    assert any(k.endswith("model.safetensors") or "safetensors" in k for k in keys), keys[:50]


def test_kmeans_and_scoring_ran_on_both_dask_workers(night_1, dask_cluster):
    prefixes = task_prefixes(dask_cluster.address)
    # Dask names a task kind after its function, leading underscores dropped
    assert {"lloyd_block", "process_chunk"} <= prefixes, sorted(prefixes)
    executed = executed_per_worker(dask_cluster.address)
    assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed


def test_the_labels_in_the_bucket_hold_one_row_per_source_row(night_1, s3_server):
    fs = s3_server.pyarrow_fs()
    labels = pq.read_table(f"decflow/it/labels/ds={NIGHT_1}/part-0.parquet",
                           filesystem=fs).to_pandas()
    source = pq.read_table(f"decflow/it/source/ds={NIGHT_1}", filesystem=fs,
                           columns=["id"]).to_pandas()
    assert len(labels) == len(source) == ROWS_PER_DAY
    assert sorted(labels["id"]) == sorted(source["id"])
    assert set(labels["model_name"]) == {MODEL} and set(labels["model_version"]) == {"1"}
    assert labels["cluster_id"].between(0, 3).all()


def test_a_second_night_and_a_rollback_on_the_same_servers(night_1, stack, prefect_server,
                                                           mlflow_server, s3_server):
    night_2 = run_deployment(prefect_server.api_url, "recluster/nightly",
                             {"run_date": NIGHT_2.isoformat()})
    assert night_2["state"]["type"] == "COMPLETED", \
        api.log_text(prefect_server.api_url, night_2["id"])[-5000:]
    assert night_2["name"] == f"recluster-{NIGHT_2}"
    client = _mlflow(mlflow_server)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(MODEL, "previous").version) == "1"
    labels = pq.read_table(f"decflow/it/labels/ds={NIGHT_2}/part-0.parquet",
                           filesystem=s3_server.pyarrow_fs()).to_pandas()
    assert len(labels) == ROWS_PER_DAY and set(labels["model_version"]) == {"2"}

    out = decflow(["rollback", "--config", "my.yaml"],
                  {**s3_server.env, **prefect_server.env}, stack["work"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "champion is version 1 again" in out.stdout
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "previous").version) == "2"
    # the rollback is a flow run on the same server
    runs = api.flow_runs_named(prefect_server.api_url, "rollback")
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
