"""A password in the tracking URI (written in the user's config file) and the object store's
secret key (in the environment) must not appear anywhere a run leaves text: the CLI's output,
MLflow params, tags, artifacts and registry, every object in the bucket, and the Prefect flow
run's parameters, logs and artifacts. The run itself must still work with them."""

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

import api
import servers
from decflow.config import dump_config
from decflow.data.synthetic import generate_source, synthetic_config

SENTINEL = "s3ntinel-Pa55w0rd-d0-not-log"
NIGHT = dt.date(2026, 11, 21)
MODEL = "it-secrets"


@pytest.fixture(scope="module")
def secret_run(s3_server, mlflow_server, prefect_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("secrets")
    old = {k: os.environ.get(k) for k in s3_server.env}
    os.environ.update(s3_server.env)
    try:
        generate_source("s3://decflow/secrets/source", rows=600, days=3, end_date=NIGHT,
                        n_clusters=3, vector_length=8, rows_per_group=200)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    # basic auth in the URI: the server does not check it, the client sends it with every call
    uri = mlflow_server.url.replace("http://", f"http://decflow:{SENTINEL}@")
    config = synthetic_config(
        "s3://decflow/secrets/source", home=str(work / "home"), n_clusters=3, vector_length=8,
        labels={"uri": "s3://decflow/secrets/labels"},
        registry={"tracking_uri": uri, "model_name": MODEL, "experiment": "it-secrets"},
        model={"n_components": 3, "hidden": [16, 16]},
        train={"pretrain_epochs": 3, "max_iter": 20, "batch_size": 64},
        kmeans={"n_init": 2}, validation={"min_rows": 50},
        # a tiny model's first version must still pass the gates to serve (not this test's
        # point): no floor on the smallest cluster
        promotion={"min_cluster_ratio": 0.0},
        compute={"n_workers": 1, "processes": False})
    text = dump_config(config).replace("***", SENTINEL)  # dump_config redacts; the user's
    assert SENTINEL in text                                # file holds the password itself
    (work / "my.yaml").write_text(text)
    out = subprocess.run(
        [servers._script("decflow"), "run", "--config", "my.yaml", "--run-date", str(NIGHT)],
        env=servers.child_env(s3_server.env, prefect_server.env), cwd=work,
        capture_output=True, text=True, timeout=600)
    return out, work


def _secrets(s3_server) -> list[str]:
    return [SENTINEL, s3_server.secret_key]


def _assert_clean(text: str, where: str, s3_server) -> None:
    for secret in _secrets(s3_server):
        assert secret not in text, f"a secret is in {where}"


def test_the_run_works_and_its_output_holds_no_secret(secret_run, s3_server):
    out, _ = secret_run
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "decflow:***@127.0.0.1" in out.stdout  # the report names the store, redacted
    _assert_clean(out.stdout + out.stderr, "the CLI's output", s3_server)


def test_mlflow_holds_no_secret(secret_run, mlflow_server, s3_server, tmp_path):
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("it-secrets")
    runs = client.search_runs([exp.experiment_id])
    assert runs
    for run in runs:
        assert run.data.params["registry.tracking_uri"].startswith("http://decflow:***@")
        _assert_clean(json.dumps(run.data.params) + json.dumps(run.data.tags),
                      f"run {run.info.run_id}'s params or tags", s3_server)
        local = client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
        files = [p for p in Path(local).rglob("*") if p.is_file()]
        assert any(p.name == "config.yaml" for p in files)
        for p in files:
            _assert_clean(p.read_bytes().decode("latin-1"), f"artifact {p.name}", s3_server)
    for mv in client.search_model_versions(f"name='{MODEL}'"):
        _assert_clean(json.dumps(mv.tags) + str(mv.source), f"version {mv.version}", s3_server)


def test_no_object_in_the_bucket_holds_a_secret(secret_run, s3_server):
    s3 = s3_server.boto3_client()
    n = 0
    for bucket in s3_server.buckets:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                _assert_clean(body.decode("latin-1"), f"s3://{bucket}/{obj['Key']}", s3_server)
                n += 1
    assert n > 10


def test_prefect_holds_no_secret(secret_run, prefect_server, s3_server):
    url = prefect_server.api_url
    mine = [r for r in api.flow_runs_named(url, f"recluster-{NIGHT}")
            if r["parameters"]["config"]["registry"]["model_name"] == MODEL]
    assert len(mine) == 1 and mine[0]["state"]["type"] == "COMPLETED"
    run = mine[0]
    assert run["parameters"]["config"]["registry"]["tracking_uri"].startswith(
        "http://decflow:***@")
    _assert_clean(json.dumps(run), "the flow run (parameters included)", s3_server)
    logs = api.final_logs(url, run["id"])
    assert any("pretraining epoch" in r["message"] for r in logs)
    _assert_clean(json.dumps(logs), "the flow run's logs", s3_server)
    found = api.artifacts(url, run["id"])
    assert {"mlflow-run", "mlflow-model-version"} <= {a["key"] for a in found}
    _assert_clean(json.dumps(found), "the flow run's artifacts", s3_server)
    tasks = api.post(url, "task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert tasks
    _assert_clean(json.dumps(tasks), "the task runs", s3_server)
