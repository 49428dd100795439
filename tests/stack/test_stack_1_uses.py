"""The three uses through the composed stack: a user's table in the composed bucket and their
config deployed with `decflow deploy`; the nightly deployment run by the composed Prefect worker
from the work pool `decflow`, with its Dask tasks on the composed Dask workers, its model on the
composed MLflow (PostgreSQL, artifacts in the bucket) and its labels in the bucket; a backfill, a
second night whose promotion the data decide, a rollback; and the UIs on 127.0.0.1.

The operator's commands (`decflow generate`, `deploy`, `rollback`) run in one-off containers of
the worker's service on the compose network (infra/README.md's quick start); what a browser or an
analyst sees is read from the host through the published ports.
"""

import datetime as dt
import re

import api
import browser
import compose
import servers
from story import (BACKFILL, CONFIG_IN_CONTAINER, MODEL, NIGHT_1, NIGHT_2, POOL,
                   ROWS_PER_DAY, links, mlflow, mlflow_run_of, read_labels, read_source_ids,
                   timed_run)


def test_the_nightly_runs_on_the_composed_worker_and_links_a_browser_can_open(night_1, stack):
    run = night_1["run"]
    assert run["state"]["type"] == "COMPLETED", api.log_text(stack.api_url, run["id"])[-5000:]
    assert run["name"] == f"recluster-{NIGHT_1}" and run["work_pool_name"] == POOL
    mlflow_run = mlflow_run_of(stack, run)
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == run["name"]
    # trained in the composed worker's container: its hostname is the container's short id
    assert stack.container("prefect-worker").startswith(mlflow_run.data.tags["decflow.host"])

    found = links(stack, run)
    assert found["mlflow-run"].startswith(f"{stack.mlflow_url}/#/experiments/"), found
    assert found["mlflow-run"].endswith(f"/runs/{mlflow_run.info.run_id}")
    assert found["mlflow-model-version"] == f"{stack.mlflow_url}/#/models/{MODEL}/versions/1"
    back = mlflow_run.data.tags["prefect.flow_run_url"]  # Prefect's own ui_url of the run
    assert back.startswith(f"{stack.prefect_url}/") and back.endswith(f"/{run['id']}"), back
    for url in (found["mlflow-run"], found["mlflow-model-version"], back):
        assert compose.browser_get(url) == 200, url  # from the host, as a browser opens it

    log = api.log_text(stack.api_url, run["id"])
    assert f"ds={NIGHT_1}: {ROWS_PER_DAY} rows validated, {ROWS_PER_DAY} labels written" in log


def test_version_1_is_champion_on_postgresql_with_artifacts_in_the_bucket(night_1, stack):
    client = mlflow(stack)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    assert version.tags["data.n_rows"] == str(ROWS_PER_DAY)
    # the registry's rows are in the composed PostgreSQL ...
    out = compose.compose("exec", "-T", "mlflow-postgres", "psql", "-U", "postgres", "-d",
                          "mlflow", "-tAc", "SELECT version FROM model_versions WHERE name = "
                          f"'{MODEL}'", check=False)
    assert out.returncode == 0 and out.stdout.split() == ["1"], out.stdout + out.stderr
    # ... and its files in the composed bucket, written through the MLflow server
    keys = [o["Key"] for page in stack.boto3_client().get_paginator("list_objects_v2").paginate(
        Bucket="mlflow") for o in page.get("Contents", [])]
    mine = [k for k in keys if f"/{version.run_id}/" in k]
    assert any(k.endswith("artifacts/config.yaml") for k in mine), mine
    assert any("safetensors" in k for k in keys), keys[:50]


def test_kmeans_and_scoring_ran_on_both_composed_dask_workers(night_1):
    before, after = night_1["dask_before"], night_1["dask_after"]
    assert {"lloyd_block", "process_chunk"} <= set(after["kinds"]), after["kinds"]
    assert set(after["executed"]) == {"dask-worker-1", "dask-worker-2"}, after
    ran = {w: n - before["executed"].get(w, 0) for w, n in after["executed"].items()}
    assert all(n > 0 for n in ran.values()), ran


def test_the_labels_in_the_bucket_hold_one_row_per_source_row(night_1, stack):
    labels = read_labels(stack, NIGHT_1)
    source_ids = read_source_ids(stack, NIGHT_1)
    assert len(labels) == len(source_ids) == ROWS_PER_DAY
    assert sorted(labels["id"]) == source_ids
    assert set(labels["model_name"]) == {MODEL} and set(labels["model_version"]) == {"1"}
    assert labels["cluster_id"].between(0, 3).all()


def test_a_backfill_of_three_days_on_the_composed_worker(night_1, stack):
    run = timed_run(stack, "backfill/on-demand",
                    {"start": BACKFILL[0].isoformat(), "end": BACKFILL[-1].isoformat()},
                    "backfill (3 days)")
    assert run["state"]["type"] == "COMPLETED", api.log_text(stack.api_url, run["id"])[-5000:]
    assert run["name"] == f"backfill-{BACKFILL[0]}..{BACKFILL[-1]}"
    for day in BACKFILL:
        labels = read_labels(stack, day)
        assert sorted(labels["id"]) == read_source_ids(stack, day), day
        assert set(labels["model_name"]) == {MODEL} and set(labels["model_version"]) == {"1"}


def test_a_second_night_promoted_by_its_data_then_a_rollback(night_1, deployed, stack):
    """NIGHT_2's partition comes from another mixture (seed 1: other means, offsets and scales)
    and the window is one day, so the champion (trained on seed 0) meets rows unlike its
    training data while the candidate was trained on them: every gate passes, by a margin
    (asserted), and version 2 is promoted."""
    run = timed_run(stack, "recluster/nightly", {"run_date": NIGHT_2.isoformat()}, "night 2")
    assert run["state"]["type"] == "COMPLETED", api.log_text(stack.api_url, run["id"])[-5000:]
    client = mlflow(stack)
    version_2 = client.get_model_version(MODEL, "2")
    assert version_2.tags["promotion.decision"] == "promote", version_2.tags
    assert version_2.tags["promotion.failed_gates"] == "none"
    gate = re.search(r"value=(\S+) threshold=(\S+)", version_2.tags["promotion.gate.silhouette"])
    assert float(gate[1]) > float(gate[2]) + 0.1, version_2.tags["promotion.gate.silhouette"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(MODEL, "previous").version) == "1"
    labels = read_labels(stack, NIGHT_2)
    assert sorted(labels["id"]) == read_source_ids(stack, NIGHT_2)
    assert set(labels["model_version"]) == {"2"}

    started = dt.datetime.now(dt.timezone.utc)
    out = stack.decflow("rollback", "--config", CONFIG_IN_CONTAINER,
                        mounts={deployed["config"]: CONFIG_IN_CONTAINER})
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{MODEL}: champion is version 1 again" in out.stdout, out.stdout
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "previous").version) == "2"
    # the rollback is a flow run on the composed Prefect server
    runs = [r for r in api.flow_runs_named(stack.api_url, "rollback")
            if dt.datetime.fromisoformat(r["created"]) >= started]
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"], runs


# --- the UIs ---------------------------------------------------------------------------------

def test_the_uis_answer_on_loopback_and_show_this_run(night_1, stack, screenshot_dir):
    browser.require_chromium()
    assert servers._http_get(f"{stack.mlflow_url}/health")[0] == 200
    assert servers._http_get(f"{stack.api_url}/health")[0] == 200
    run = night_1["run"]
    mlflow_png = screenshot_dir / "stack-mlflow.png"
    prefect_png = screenshot_dir / "stack-prefect.png"
    browser.screenshot_when_shown(links(stack, run)["mlflow-run"], mlflow_png,
                                  [run["name"], MODEL])
    # the link from the MLflow run back to the Prefect run, as a browser follows it
    back = mlflow_run_of(stack, run).data.tags["prefect.flow_run_url"]
    browser.screenshot_when_shown(back, prefect_png,
                                  [run["name"], "Completed", "Beginning flow run"])
    for png in (mlflow_png, prefect_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, png
