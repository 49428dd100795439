"""MLflow's PostgreSQL stopped while the nightly trains. The run's next MLflow call fails
(decflow gives up within its outage budget and names the service); the Prefect server keeps its
state in its own PostgreSQL, so it records the run FAILED with that reason.

Runs last (after test_stack_2_faults.py): it leaves the stack healthy again.
"""

import datetime as dt
import time


import api
import compose
from story import (MODEL, NIGHT_2, flow_run, labels_of, mlflow, run_deployment,
                   start_deployment, wait_for)

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
TRAINING_TASKS = ("pretrain_autoencoder", "init_centroids", "fit_dec")
SERVICE_ERROR = "ServiceUnavailable"
NAMED = "MLflow tracking server http://mlflow:5000 did not answer"
INTERRUPTED: dict[str, str] = {}  # the interrupted flow run's id, for the tests after


def training(stack, flow_run_id: str) -> list[str]:
    """The flow run's training tasks now running (their states, from the Prefect server)."""
    runs = api.post(stack.api_url, "task_runs/filter",
                    {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return [t["name"] for t in runs if (t.get("state") or {}).get("type") == "RUNNING"
            and t["name"].startswith(TRAINING_TASKS)]


def worker_log_since(stack, since: str) -> str:
    out = compose.run([compose.DOCKER, "logs", "--since", since,
                       stack.container("prefect-worker")])
    return out.stdout + out.stderr


def model_versions(stack) -> list[int]:
    return sorted(int(v.version) for v in mlflow(stack).search_model_versions(
        f"name='{MODEL}'"))


def test_postgresql_stopped_while_the_nightly_trains_fails_the_run_naming_it(stack, night_1):
    """The run stops at its next MLflow call with decflow's ServiceUnavailable naming the
    MLflow tracking server (the service it talks to); no model version and no label is
    written."""
    versions = model_versions(stack)
    labels = labels_of(stack, NIGHT_2)
    since = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = start_deployment(stack, "recluster/nightly", {"run_date": NIGHT_2.isoformat()})
    INTERRUPTED["id"] = run["id"]
    wait_for("the nightly training", lambda: training(stack, run["id"]), every=0.3)
    compose.compose("stop", "mlflow-postgres")
    try:
        log = wait_for("the run's error in the worker's log",
                       lambda: (lambda text: text if SERVICE_ERROR in text else "")(
                           worker_log_since(stack, since)), timeout=180, every=1)
    finally:
        compose.compose("start", "mlflow-postgres")
        stack.wait_healthy(["mlflow-postgres", "mlflow", "prefect-server", "prefect-worker"])
    assert NAMED in log, log[-3000:]
    assert model_versions(stack) == versions
    assert labels_of(stack, NIGHT_2).equals(labels)


def test_the_interrupted_run_ends_failed_naming_the_service(stack):
    assert "id" in INTERRUPTED, "the PostgreSQL test did not run"
    run = wait_for("a final state of the interrupted run", lambda: (
        lambda r: r if r["state"]["type"] in FINAL else None)(
        flow_run(stack, INTERRUPTED["id"])), timeout=60, every=2)
    compose.NOTES.append(f"the run interrupted by PostgreSQL ended {run['state']['type']}: "
                         f"{(run['state'].get('message') or '')[:150]}")
    assert run["state"]["type"] == "FAILED", run["state"]
    assert "MLflow tracking server" in (run["state"]["message"] or ""), run["state"]


def test_the_next_nightly_after_postgresql_is_back_completes(stack):
    """With nobody touching the interrupted run: it ended FAILED, so it holds no slot of the
    nightly deployment's one-at-a-time limit."""
    assert "id" in INTERRUPTED, "the PostgreSQL test did not run"
    t0 = time.monotonic()
    run = run_deployment(stack.api_url, "recluster/nightly", {"run_date": NIGHT_2.isoformat()})
    compose.TIMES["night after PostgreSQL restart (incl. the wait for the slot)"] = (
        time.monotonic() - t0)
    assert run["state"]["type"] == "COMPLETED", api.log_text(stack.api_url, run["id"])[-3000:]
