"""What decflow starts by itself listens on loopback only: the embedded Dask cluster, Prefect's
ephemeral API server, and `decflow ui` unless --host names another address (the real `ui`
servers are started in tests/integration/test_ui_loopback.py)."""

import ipaddress
import os
import subprocess

import psutil
from typer.testing import CliRunner

from decflow.config import ComputeConfig
from decflow.engine.compute import dask_client
from decflow.flows import cli
from testkit import listening


def on_loopback(addresses) -> bool:
    return all(ipaddress.ip_address(ip).is_loopback for ip, _ in addresses)


def test_the_embedded_dask_cluster_listens_on_loopback_only():
    me = psutil.Process()
    before = listening([me])
    with dask_client(ComputeConfig(n_workers=2, processes=True)) as client:
        workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        opened = (listening([me]) - before) | listening(workers)
    assert len(workers) == 2 and len(opened) >= 3  # the scheduler, each worker (and nanny)
    assert on_loopback(opened), opened


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
