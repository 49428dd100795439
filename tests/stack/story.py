"""The stack tier's story, shared by its test modules: one session's names, dates and data,
the user's config, and how the tests run deployments and read what runs left.

Each session uses its own model name and source prefix (`stack-<UTC time>`), so the tier also
runs on a stack that already holds runs (a second `make stack-test` without `stack-clean`).
"""

import datetime as dt
import re
import time

import pyarrow.parquet as pq
from mlflow import MlflowClient

import api
import compose
import servers
from decflow.config import dump_config
from decflow.data.synthetic import synthetic_config
from test_nightly_deployment import run_deployment, wait_for_final_state  # noqa: F401

TAG = time.strftime("%Y%m%d%H%M%S", time.gmtime())  # this session's model and source prefix
MODEL = f"stack-{TAG}"
SOURCE = f"s3://decflow/stack-test/{TAG}/source"
LABELS = "decflow/labels"  # the worker's DECFLOW_LABELS__URI (infra/docker-compose.yml)
POOL = "decflow"  # the pool the composed worker polls
NIGHT_1 = dt.date(2026, 11, 21)
NIGHT_2 = NIGHT_1 + dt.timedelta(days=1)
BACKFILL = [NIGHT_1 - dt.timedelta(days=d) for d in (3, 2, 1)]
ROWS_PER_DAY = 300
ROWS_PER_GROUP = 100  # three row groups a day: three Dask tasks to spread over two workers
CONFIG_IN_CONTAINER = "/tmp/stack-test.yaml"

# Every Dask worker's executed task count and the task kinds the scheduler has seen.
DASK_PROBE = """
import json, distributed
with distributed.Client("tcp://dask-scheduler:8786", timeout=30) as c:
    counts = c.run(lambda dask_worker: [dask_worker.name, dask_worker.state.executed_count])
    kinds = c.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
print(json.dumps({"executed": dict(counts.values()), "kinds": kinds}))
"""


def user_config(tmp_path):
    """A user's config for the composed services: service names (the runs execute inside the
    stack), a tiny model, and the promotion gates' defaults (the data decide)."""
    config = synthetic_config(
        SOURCE, home="/var/lib/decflow", n_clusters=4, window_days=1,
        labels={"uri": f"s3://{LABELS}"},
        registry={"tracking_uri": "http://mlflow:5000", "model_name": MODEL,
                  "experiment": MODEL},
        compute={"dask_address": "tcp://dask-scheduler:8786", "chunk_rows": ROWS_PER_GROUP,
                 "batch_rows": 128},
        model={"n_components": 4, "hidden": [32, 32], "init": "k-means"},
        train={"pretrain_epochs": 8, "max_iter": 60, "batch_size": 64, "random_state": 0},
        kmeans={"n_init": 3, "chunk_rows": ROWS_PER_GROUP},
        validation={"min_rows": 100})
    path = tmp_path / "stack-test.yaml"
    path.write_text(dump_config(config))
    path.chmod(0o644)  # read by the container's user (uid 1001)
    return path


def generate(stack, rows: int, days: int, run_date: dt.date, seed: int) -> None:
    out = stack.decflow("generate", "--rows", str(rows), "--days", str(days), "--out-uri", SOURCE,
                        "--run-date", run_date.isoformat(), "--clusters", "4", "--seed",
                        str(seed), "--rows-per-group", str(ROWS_PER_GROUP))
    assert out.returncode == 0, out.stdout + out.stderr


def dask_state(stack) -> dict:
    return stack.python(DASK_PROBE)


def timed_run(stack, name: str, parameters: dict, label: str) -> dict:
    t0 = time.monotonic()
    run = run_deployment(stack.api_url, name, parameters)
    compose.TIMES[label] = time.monotonic() - t0
    return run


def start_deployment(stack, name: str, parameters: dict) -> dict:
    """Create a flow run of a deployment (the worker picks it up); returns it at once."""
    deployment = api.get(stack.api_url, f"deployments/name/{name}")
    return api.post(stack.api_url, f"deployments/{deployment['id']}/create_flow_run",
                    {"parameters": parameters})


def flow_run(stack, flow_run_id: str) -> dict:
    return api.get(stack.api_url, f"flow_runs/{flow_run_id}")


def chunk_transitions(stack) -> dict[str, float]:
    """How many times `process_chunk` tasks (validation and scoring of one chunk) entered each
    state since the scheduler started, and under "suspicious" how many were running on a
    worker that died, from the scheduler's Prometheus metrics on the published dashboard port
    (cheap enough to poll every 0.2 s)."""
    status, body = servers._http_get(
        f"http://127.0.0.1:{stack.ports['dask_dashboard']}/metrics")
    assert status == 200, body[:500]
    out = {}
    for line in body.decode().splitlines():
        found = re.match(r'dask_scheduler_prefix_state_totals_total\{state="(\w+)",'
                         r'task_prefix_name="process_chunk"\} (\S+)', line)
        if found:
            out[found[1]] = float(found[2])
        found = re.match(r'dask_scheduler_tasks_suspicious_total\{task_prefix_name='
                         r'"process_chunk"\} (\S+)', line)
        if found:
            out["suspicious"] = float(found[1])
    return out


def wait_for(what: str, check, timeout: float = 300, every: float = 0.2):
    """Poll ``check()`` until it returns something true (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)


def mlflow(stack) -> MlflowClient:
    return MlflowClient(stack.mlflow_url, registry_uri=stack.mlflow_url)


def mlflow_run_of(stack, flow_run: dict):
    client = mlflow(stack)
    experiment = client.get_experiment_by_name(MODEL)
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.`prefect.flow_run_id` = '{flow_run['id']}'")
    assert len(runs) == 1, runs
    return runs[0]


def links(stack, flow_run: dict) -> dict[str, str]:
    """The flow run's link artifacts: key -> the URL in its markdown."""
    out = {}
    for artifact in api.artifacts(stack.api_url, flow_run["id"]):
        found = re.search(r"\]\((https?://[^)\s]+)\)", artifact.get("data") or "")
        if artifact["key"] and found:
            out[artifact["key"]] = found.group(1)
    return out


def read_labels(stack, day: dt.date):
    return pq.read_table(f"{LABELS}/ds={day}", filesystem=stack.pyarrow_fs()).to_pandas()


def labels_of(stack, day: dt.date):
    """The day's labels (what a reader compares), sorted by id."""
    frame = read_labels(stack, day)[["id", "cluster_id", "confidence", "model_name",
                                     "model_version"]]
    return frame.sort_values("id").reset_index(drop=True)


def read_source_ids(stack, day: dt.date) -> list[int]:
    root = SOURCE.removeprefix("s3://")
    table = pq.read_table(f"{root}/ds={day}", filesystem=stack.pyarrow_fs(), columns=["id"])
    return sorted(table.column("id").to_pylist())
