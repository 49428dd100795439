"""An MLflow outage fails fast and cleanly (issue 10, item 6).

- An unreachable tracking server (a closed port on 127.0.0.1) fails `score` and `recluster`
  with ``ServiceUnavailable`` well within 60 s, naming the server (password redacted) and the
  time budget, with nothing written.
- A real ``mlflow server`` (sqlite, proxied artifacts) killed right after the nightly run
  registered its version: the run fails within 60 s of the kill, no label is written, and the
  version holds no alias (it was never judged). When the server is back, the next run start
  marks the interrupted MLflow run FAILED, and the rerun succeeds.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from flowkit import RUN_DATE, tiny_config, write_source
from decflow.errors import ServiceUnavailable
from decflow.registry import versions
from decflow.registry.client import http_budget
from decflow.flows import recluster as recluster_module
from decflow.flows.recluster import recluster
from decflow.flows.score import score
from decflow.tasks.tracking import tracked_run

SECRET = "s3ntinel-pw"
BOUND_S = 60.0


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label_files(config) -> list[str]:
    root = Path(config.labels_uri())
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


@pytest.fixture()
def unreachable(tmp_path):
    source = str(tmp_path / "source")
    write_source(source)
    port = closed_port()
    uri = f"http://decflow:{SECRET}@127.0.0.1:{port}"
    return tiny_config(tmp_path, source, registry={"tracking_uri": uri}), port


@pytest.mark.parametrize("flow", ["score", "recluster"])
def test_an_unreachable_tracking_server_fails_fast_with_a_clear_error(unreachable, flow):
    config, port = unreachable
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        if flow == "score":
            score(config=config, run_date=RUN_DATE)
        else:
            recluster(config=config, run_date=RUN_DATE)
    elapsed = time.monotonic() - start
    assert elapsed < BOUND_S, f"{flow} took {elapsed:.1f} s to give up"
    message = str(err.value)
    assert f"MLflow tracking server http://decflow:***@127.0.0.1:{port}" in message
    assert "did not answer" in message and "budget" in message
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT=" in message
    assert SECRET not in message
    assert label_files(config) == []


def test_a_server_that_never_answers_fails_within_the_configured_budget(monkeypatch):
    """The budget is MLflow's own variables; decflow only sets them where they are unset."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    budget = http_budget()
    assert budget == {"timeout": 2, "retries": 1, "seconds": 4.0}
    with socket.socket() as hung:  # the kernel accepts connections; nobody ever answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable,
                           match=r"within its budget of 4\.0 s per call \(2 tries of up to 2 s; "
                                 r"MLFLOW_HTTP_REQUEST_TIMEOUT=2, "):
            versions.get_version(uri, "tiny", "champion")
        elapsed = time.monotonic() - start
    assert elapsed < budget["seconds"] + 5.0


# ------------------------------------------------------------------- a real server that dies
class MlflowServer:
    """``mlflow server`` on a sqlite store with proxied artifacts, in its own process group."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.popen = root, port, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 120.0) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.root / 'db'}",
               "--artifacts-destination", (self.root / "artifacts").as_uri(),
               "--serve-artifacts", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1",
               "--allowed-hosts", f"127.0.0.1,127.0.0.1:{self.port},localhost"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "PYTHONUNBUFFERED": "1"}
        log = open(self.root / f"server-{time.time_ns()}.log", "wb")
        self.popen = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # readiness poll, not a synchronisation point
            if self.popen.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server not ready in {timeout} s: {log.name}")

    def kill(self) -> None:
        """SIGKILL the server's process group (it was started as its own session)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    srv = MlflowServer(root, closed_port())
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def outage(server, tmp_path_factory):
    """A nightly run whose server is killed right after registration, then the aftermath."""
    home = tmp_path_factory.mktemp("outage")
    source = str(home / "source")
    write_source(source)
    config = tiny_config(home, source, registry={"tracking_uri": server.url})
    out = {"config": config}
    real = recluster_module.register_model

    def register_then_die(*args, **kwargs):
        version = real(*args, **kwargs)
        out["registered"] = version
        server.kill()
        out["killed_at"] = time.monotonic()
        return version

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recluster_module, "register_model", register_then_die)
        try:
            recluster(config=config, run_date=RUN_DATE)
        except Exception as exc:  # asserted below
            out["error"] = exc
    out["failed_after_s"] = time.monotonic() - out.get("killed_at", time.monotonic())
    out["labels_after_outage"] = label_files(config)

    server.start()
    client = MlflowClient(server.url, registry_uri=server.url)
    runs = client.search_runs([client.get_experiment_by_name("decflow").experiment_id])
    out["interrupted"] = runs[0].info.run_id
    out["status_when_back"] = runs[0].info.status
    out["aliases_when_back"] = dict(client.get_registered_model("tiny").aliases)
    out["tags_when_back"] = dict(client.get_model_version("tiny", out["registered"]).tags)
    with tracked_run(config, "next-run", {"decflow.flow": "recluster"}):
        pass
    out["interrupted_after_next_start"] = client.get_run(out["interrupted"])
    out["rerun"] = recluster(config=config, run_date=RUN_DATE)
    out["aliases_after_rerun"] = {k: str(v) for k, v in
                                  client.get_registered_model("tiny").aliases.items()}
    return out


def test_a_server_killed_after_registration_fails_the_run_within_the_bound(outage):
    assert outage["registered"] == "1"
    assert isinstance(outage.get("error"), ServiceUnavailable), outage.get("error")
    assert outage["failed_after_s"] < BOUND_S
    assert f"MLflow tracking server {outage['config'].tracking_uri()}" in str(outage["error"])
    assert outage["labels_after_outage"] == []


def test_the_version_registered_before_the_outage_holds_no_alias(outage):
    assert outage["aliases_when_back"] == {}
    assert outage["tags_when_back"]["promotion.decision"] == "pending"
    assert outage["aliases_after_rerun"] == {"champion": "2", "challenger": "2"}


def test_the_interrupted_run_is_marked_failed_when_the_server_is_back(outage):
    assert outage["status_when_back"] == "RUNNING"  # the failure path could not reach it
    run = outage["interrupted_after_next_start"]
    assert run.info.status == RunStatus.to_string(RunStatus.FAILED)
    assert "left RUNNING" in run.data.tags["decflow.error"]


def test_the_rerun_after_the_outage_succeeds(outage):
    rerun = outage["rerun"]
    assert rerun["model_version"] == "2"
    assert rerun["promotion"]["decision"] == "promote"
    assert rerun["labels"]["rows"] == 90
