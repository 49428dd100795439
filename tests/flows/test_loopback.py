"""What decflow starts by itself listens on loopback only: the embedded Dask cluster, Prefect's
ephemeral API server, and `decflow ui` unless --host names another address (the real `ui`
servers are started in tests/integration/test_ui_loopback.py)."""

import ipaddress
import logging
import os
import subprocess
import urllib.request

import psutil
import pytest
from typer.testing import CliRunner

from decflow.config import ComputeConfig
from decflow.engine.compute import dask_client
from decflow.flows import cli
from testkit import listening


def on_loopback(addresses) -> bool:
    return all(ipaddress.ip_address(ip).is_loopback for ip, _ in addresses)


@pytest.mark.parametrize("processes", [True, False], ids=["worker processes", "threads"])
def test_the_embedded_dask_cluster_listens_on_loopback_only(processes):
    """Worker processes (TCP between them) and an in-process cluster (no TCP between them, but
    the scheduler's and the workers' HTTP servers: /health, /metrics, the dashboard)."""
    me = psutil.Process()
    before = listening([me])
    with dask_client(ComputeConfig(n_workers=2, processes=processes)) as client:
        workers = [psutil.Process(pid) for pid in set(client.run(os.getpid).values())]
        opened = (listening([me]) - before) | (listening(workers) if processes else set())
    assert len(workers) == (2 if processes else 1)
    assert len(opened) >= 3  # the scheduler, each worker (and nanny), or their HTTP servers
    assert on_loopback(opened), opened


def test_the_embedded_clusters_dashboard_address_is_logged_and_opens(caplog):
    """Every command that uses Dask logs (and so prints, through the flow's console handler)
    where its cluster's dashboard is: on loopback, the port the scheduler took."""
    caplog.set_level(logging.INFO, logger="decflow.engine.compute")
    with dask_client(ComputeConfig(n_workers=1, threads_per_worker=2, processes=False)) as client:
        port = client.scheduler_info()["services"]["dashboard"]
        link = f"http://127.0.0.1:{port}/status"
        with urllib.request.urlopen(link, timeout=30) as page:  # bokeh is in the test env
            assert page.status == 200 and b"Dask" in page.read()
    logged = [r.getMessage() for r in caplog.records if r.name == "decflow.engine.compute"]
    assert logged == [f"Dask: an embedded cluster of 1 worker x 2 threads, dashboard {link}"]


def test_prefects_ephemeral_server_listens_on_loopback_only():
    """The flows tier's server is the one Prefect starts for a CLI run without
    PREFECT_API_URL (``SubprocessASGIServer``)."""
    servers = [p for p in psutil.Process().children(recursive=True)
               if "uvicorn" in " ".join(p.cmdline()) and "prefect" in " ".join(p.cmdline())]
    assert servers, "no Prefect server process found under the test run"
    opened = listening(servers)
    assert opened and on_loopback(opened), opened


class _Started:
    commands: list[list[str]] = []

    def __init__(self, cmd, env=None):
        self.commands.append(list(cmd))

    def wait(self, timeout=None):
        return 0

    def terminate(self):
        pass


def _ui(tmp_path, monkeypatch, *options):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(subprocess, "Popen", _Started)
    _Started.commands = []
    out = CliRunner().invoke(cli.app, ["ui", "--home", str(tmp_path / "home"), *options])
    assert out.exit_code == 0, out.output
    hosts = [cmd[cmd.index("--host") + 1] for cmd in _Started.commands]
    return out.output, hosts


def test_ui_serves_on_loopback_unless_told_otherwise(tmp_path, monkeypatch):
    output, hosts = _ui(tmp_path, monkeypatch)
    assert hosts == ["127.0.0.1", "127.0.0.1"]  # mlflow server, prefect server start
    assert "warning" not in output
    output, hosts = _ui(tmp_path, monkeypatch, "--host", "0.0.0.0")
    assert hosts == ["0.0.0.0", "0.0.0.0"]
    assert "warning: serving on 0.0.0.0: anyone who can reach this machine" in output
