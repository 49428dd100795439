"""Running decflow like a service, against the real servers.

Notifications: a person hears about a night: `decflow deploy --notify URL` against the real
Prefect server, with a webhook receiver on loopback. Nights run as a user runs them (`decflow
run` against the server); the last one runs through the deployment on a worker and is
SIGKILLed with its worker, as when a machine is lost. The receiver must get exactly one message
for the failed night, one for the drift alert and one for the crashed run, and none for the
green night.

Serving: the champion answers HTTP requests with the labels the night wrote, through
`mlflow models serve -m models:/<name>@champion` as documented and through
`decflow serve-model`."""

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

import api
import browser
import servers
from decflow.config import dump_config
from decflow.data import partitioned
from decflow.data.synthetic import generate_source, synthetic_config
from testkit import WebhookReceiver

NIGHT_1 = dt.date(2026, 10, 11)
NIGHT_2 = NIGHT_1 + dt.timedelta(days=1)
EMPTY_NIGHT = NIGHT_1 - dt.timedelta(days=30)  # before the table: no partition in its window
MODEL = "it-notify"
POOL = "decflow-it-notify"
SECRET = "hook-s3cret-token"
CRASH_AFTER_S = 60
WAIT_S = 240


def decflow(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([servers._script("decflow"), *args], env=servers.child_env(env),
                          cwd=cwd, capture_output=True, text=True, timeout=600)


class Receiver(WebhookReceiver):
    def wait_for(self, count: int, timeout: float = WAIT_S) -> list[dict]:
        return super().wait_for(count, timeout)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver(f"/hooks/decflow?token={SECRET}")
    yield r
    r.close()


@pytest.fixture(scope="module")
def setup(receiver, mlflow_server, prefect_server, dask_cluster, s3_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("notify")
    source = work / "source"
    generate_source(str(source), rows=600, days=2, end_date=NIGHT_1, n_clusters=4,
                    vector_length=8, rows_per_group=300)
    # tonight's rows come from another mixture: the cluster sizes move
    generate_source(str(source), rows=300, days=1, end_date=NIGHT_2, n_clusters=3,
                    vector_length=8, seed=5)
    config = synthetic_config(
        str(source), home=str(work / "home"), n_clusters=4, vector_length=8, window_days=2,
        registry={"tracking_uri": mlflow_server.url, "model_name": MODEL,
                  "experiment": "it-notify"},
        compute={"dask_address": dask_cluster.address},
        model={"n_components": 4, "hidden": [16, 16], "init_views": 1},
        train={"pretrain_epochs": 2, "max_iter": 10, "batch_size": 64, "random_state": 0},
        kmeans={"n_init": 2}, validation={"min_rows": 100},
        monitoring={"max_size_shift": 0.0})  # any shift of the cluster sizes is an alert
    (work / "my.yaml").write_text(dump_config(config))
    env = {**prefect_server.env, **s3_server.env}
    out = decflow(["deploy", "--config", "my.yaml", "--work-pool", POOL, "--notify",
                   receiver.url, "--crash-after", str(CRASH_AFTER_S)], env, work)
    assert out.returncode == 0, out.stdout + out.stderr
    return {"work": work, "env": env, "deploy": out, "config": config, "source": str(source)}


@pytest.fixture(scope="module")
def nights(setup, receiver):
    """A green first night, a failed night, a drifting night (all `decflow run`)."""
    work, env = setup["work"], setup["env"]
    runs = {}
    for name, night in (("green", NIGHT_1), ("failed", EMPTY_NIGHT), ("drift", NIGHT_2)):
        runs[name] = decflow(["run", "--config", "my.yaml", "--run-date", night.isoformat()],
                             env, work)
    return runs


def test_deploy_names_the_automations_and_never_the_webhook_secret(setup, prefect_server):
    out = setup["deploy"]
    for what in ("unresponsive runs", "failed night", "drift alert", "crashed run"):
        assert f"automation 'decflow/{MODEL}: {what}'" in out.stdout, out.stdout
    assert "http://127.0.0.1:" in out.stdout
    assert SECRET not in out.stdout + out.stderr
    automations = api.post(prefect_server.api_url, "automations/filter", {})
    mine = [a for a in automations if a["name"].startswith(f"decflow/{MODEL}:")]
    assert len(mine) == 4
    assert SECRET not in json.dumps(mine)
    # the webhook's URL is a secret value of its block: the API shows it masked
    blocks = api.post(prefect_server.api_url, "block_documents/filter", {})
    hooks = [b for b in blocks if b["name"].startswith("decflow-notify-")]
    assert len(hooks) == 1 and SECRET not in json.dumps(hooks)


def test_one_message_for_the_failed_night_and_one_for_the_drift_none_for_the_green_night(
        nights, receiver):
    assert nights["green"].returncode == 0, nights["green"].stdout + nights["green"].stderr
    assert nights["failed"].returncode == 1, nights["failed"].stderr
    assert nights["drift"].returncode == 0, nights["drift"].stdout + nights["drift"].stderr
    messages = receiver.wait_for(2)
    subjects = sorted(m["subject"] for m in messages)
    assert len(messages) == 2, subjects
    failed, drift = sorted(messages, key=lambda m: "drift" in m["subject"])
    assert failed["subject"] == (f"decflow: recluster-{EMPTY_NIGHT} of model {MODEL} FAILED "
                                 "(data, exit code 1)")
    assert f"recluster-{EMPTY_NIGHT} failed: data error, exit code 1" in failed["body"]
    assert "Prefect run: http://127.0.0.1:" in failed["body"]
    assert failed["text"].startswith(failed["subject"] + "\n")
    assert drift["subject"] == f"decflow: drift alert on recluster-{NIGHT_2} of model {MODEL}"
    assert "monitoring.max_size_shift 0" in drift["body"]
    assert "run report: http://" in drift["body"] and "report/report.html" in drift["body"]
    assert not any(f"recluster-{NIGHT_1}" in m["text"] for m in messages)
    assert all(path == f"/hooks/decflow?token={SECRET}" for path in receiver.paths)


def test_the_night_events_are_on_the_server_with_their_exit_code_class(nights, receiver,
                                                                       prefect_server):
    receiver.wait_for(2)

    def stored():  # the server stores events in batches: all six, once they are there
        found = api.post(prefect_server.api_url, "events/filter", {
            "filter": {"event": {"prefix": ["decflow."]},
                       "resource": {"id": [f"decflow.model.{MODEL}"]}},
            "limit": 50})["events"]
        return found if len(found) >= 6 else None

    events = _wait("the six decflow events on the server", stored, timeout=120)
    assert len(events) == 6, [e["event"] for e in events]
    by_name: dict[str, list[dict]] = {}
    for e in events:
        by_name.setdefault(e["event"], []).append(e["payload"])
    assert sorted(p["run_date"] for p in by_name["decflow.night.completed"]) == \
        [NIGHT_1.isoformat(), NIGHT_2.isoformat()]
    [failed] = by_name["decflow.night.failed"]
    assert (failed["exit_code"], failed["failure_class"]) == (1, "data")
    assert failed["error_type"] == "DataError"
    assert len(by_name["decflow.drift.alert"]) == 1
    # each night's version is judged by the gates (auto_promote): each verdict is an event
    verdicts = sorted((p["candidate"], p["decision"]) for name, payloads in by_name.items()
                      if name.startswith("decflow.promotion.") for p in payloads)
    assert verdicts == [("1", "promote"), ("2", "promote")]


def _flow_run_state(api_url: str, flow_run_id: str) -> str:
    return api.get(api_url, f"flow_runs/{flow_run_id}")["state"]["type"]


def _heartbeats(api_url: str, flow_run_id: str) -> int:
    return len(api.post(api_url, "events/filter", {
        "filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                   "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}},
        "limit": 10})["events"])


def _wait(what: str, check, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(2)
    return value


def test_a_killed_deployed_run_is_marked_crashed_and_a_message_says_so(
        nights, receiver, prefect_server, prefect_worker, s3_server):
    receiver.wait_for(2)
    api_url = prefect_server.api_url
    worker = prefect_worker(POOL, env=s3_server.env)
    deployment = api.get(api_url, "deployments/name/recluster/nightly")
    run = api.post(api_url, f"deployments/{deployment['id']}/create_flow_run",
                   {"parameters": {"run_date": NIGHT_1.isoformat()}})  # killed: any night
    # killed once it runs and the server has its first heartbeat
    _wait("the deployed run's first heartbeat", lambda: _heartbeats(api_url, run["id"]))
    assert _flow_run_state(api_url, run["id"]) == "RUNNING"
    doomed = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    assert len(doomed) >= 2, "the worker has no flow-run process"
    for proc in doomed:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(doomed, timeout=30)
    assert _flow_run_state(api_url, run["id"]) == "RUNNING"  # nobody left to say otherwise
    killed = time.monotonic()
    _wait("CRASHED", lambda: _flow_run_state(api_url, run["id"]) == "CRASHED",
          timeout=CRASH_AFTER_S + 120)
    took = time.monotonic() - killed
    state = api.get(api_url, f"flow_runs/{run['id']}")["state"]
    assert f"no heartbeat for {CRASH_AFTER_S} s" in state["message"]
    messages = receiver.wait_for(3)
    if os.environ.get("OPERATIONS_MESSAGES_FILE"):  # the README's examples, as received
        Path(os.environ["OPERATIONS_MESSAGES_FILE"]).write_text(json.dumps(messages, indent=1))
    assert len(messages) == 3
    crashed = messages[-1]
    name = api.get(api_url, f"flow_runs/{run['id']}")["name"]
    assert name == f"recluster-{NIGHT_1}"
    assert crashed["subject"] == f"decflow: a run of model {MODEL} crashed: {name}"
    assert f"no heartbeat for {CRASH_AFTER_S} s" in crashed["body"]
    assert f"Prefect run: flow run id {run['id']}" in crashed["body"]  # the server has no UI
    assert took < CRASH_AFTER_S + 90, took


def _serve(argv: list[str], env: dict, cwd: Path):
    """A model server process; its base URL once /ping answers (fails with its output)."""
    port = servers.free_port()
    proc = subprocess.Popen([*argv, "--port", str(port)], env=servers.child_env(env), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, f"the model server exited: {proc.stdout.read()}"
        status, _ = servers._http_get(f"{url}/ping", timeout=2)
        return status == 200

    try:
        _wait("the model server's /ping", lambda: _answers(ready), timeout=180)
    except BaseException:
        _stop(proc)
        raise
    return proc, url


def _answers(ready) -> bool:
    try:
        return ready()
    except OSError:  # not listening yet
        return False


def _stop(proc) -> str:
    """Stop the server's process group; its output."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


def _night_rows(setup, n: int = 25):
    """The first ``n`` source rows of NIGHT_2 and the labels the night wrote for them."""
    import pyarrow.dataset as pads

    config = setup["config"]
    frame = pads.dataset(f"{setup['source']}/ds={NIGHT_2}", format="parquet").to_table() \
        .to_pandas().head(n)
    labels = partitioned.read_partition(config.labels_uri(), "ds", NIGHT_2)
    labels = labels.set_index("id").loc[frame["id"]]
    return frame, labels


def _ask(url: str, frame: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in frame.columns if c not in ("ds", "cluster")]
    data = [[v.tolist() if isinstance(v, np.ndarray) else v for v in row]
            for row in frame[columns].itertuples(index=False)]
    status, out = servers._http_json("POST", f"{url}/invocations",
                                     {"dataframe_split": {"columns": columns, "data": data}})
    assert status == 200, out
    return pd.DataFrame(out["predictions"])


def _same_as_the_labels(answer: pd.DataFrame, labels: pd.DataFrame) -> None:
    assert list(answer.columns) == ["cluster_id", "confidence", "distance"]
    np.testing.assert_array_equal(answer["cluster_id"], labels["cluster_id"])
    np.testing.assert_allclose(answer["confidence"], labels["confidence"], rtol=1e-5)
    np.testing.assert_allclose(answer["distance"], labels["distance"], rtol=1e-5, atol=1e-6)


def test_mlflow_models_serve_of_the_champion_answers_with_the_nights_labels(
        nights, setup, mlflow_server, s3_server):
    frame, labels = _night_rows(setup)
    assert set(labels["model_version"]) == {"2"}  # the drift night's version, promoted
    env = {**s3_server.env, "MLFLOW_TRACKING_URI": mlflow_server.url,
           "PATH": f"{Path(servers._script('mlflow')).parent}:/usr/bin:/bin"}
    proc, url = _serve([servers._script("mlflow"), "models", "serve", "-m",
                        f"models:/{MODEL}@champion", "--env-manager", "local", "--host",
                        "127.0.0.1"], env, setup["work"])
    try:
        answer = _ask(url, frame)
    finally:
        _stop(proc)
    _same_as_the_labels(answer, labels)


def test_decflow_serve_model_serves_the_verified_champion(nights, setup, s3_server):
    frame, labels = _night_rows(setup)
    proc, url = _serve([servers._script("decflow"), "serve-model", "--config", "my.yaml"],
                       setup["env"], setup["work"])
    try:
        answer = _ask(url, frame)
    finally:
        out = _stop(proc)
    _same_as_the_labels(answer, labels)
    assert f"serving {MODEL} version 2 (champion), verified, from " in out, out


def test_the_mlflow_run_page_shows_its_datasets(nights, setup, mlflow_server, tmp_path):
    """The drift night's run in the MLflow UI lists the training window and the labels it
    wrote. OPERATIONS_SCREENSHOT_DIR=docs keeps the picture as docs/mlflow-datasets.png."""
    from mlflow import MlflowClient

    browser.require_chromium()
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("it-notify").experiment_id
    [run] = client.search_runs([experiment], f"attributes.run_name = 'recluster-{NIGHT_2}'")
    window = f"source {NIGHT_1}..{NIGHT_2}"
    out = Path(os.environ.get("OPERATIONS_SCREENSHOT_DIR") or tmp_path) / "mlflow-datasets.png"
    shown = browser.screenshot_when_shown(
        f"{mlflow_server.url}/#/experiments/{experiment}/runs/{run.info.run_id}", out,
        [f"recluster-{NIGHT_2}", "Datasets", window], click=window,
        then=["2 datasets used", f"labels {NIGHT_2}", "num rows: 600", "Source type"])
    assert "Labels (Written)" in shown and "Training" in shown
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
