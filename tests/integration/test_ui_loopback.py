"""`decflow ui` starts a real MLflow server and a real Prefect server for a home's stores: both
answer on 127.0.0.1 and listen on loopback only."""

import ipaddress
import sys
from pathlib import Path

import psutil
import pytest

import servers
from testkit import listening

pytestmark = pytest.mark.integration


def _listening(pid: int) -> set[tuple[str, int]]:
    root = psutil.Process(pid)
    return listening([root, *root.children(recursive=True)])


def test_ui_serves_both_stores_on_loopback_only(tmp_path):
    mlflow_port, prefect_port = servers.free_ports(2)
    exe = Path(sys.executable).with_name("decflow")
    proc = servers.launch("decflow-ui", [str(exe), "ui", "--home", str(tmp_path / "home"),
                                         "--mlflow-port", str(mlflow_port),
                                         "--prefect-port", str(prefect_port)],
                          env=servers.child_env(), tmp_dir=servers.make_tmp_dir("ui"))
    try:
        def both_up():
            return (servers._http_get(f"http://127.0.0.1:{mlflow_port}/health")[0] == 200
                    and servers._http_get(f"http://127.0.0.1:{prefect_port}/api/health")[0]
                    == 200)

        proc.wait_until(both_up, "the MLflow and Prefect UIs", servers.STARTUP_TIMEOUT)
        opened = _listening(proc.pid)
        assert {mlflow_port, prefect_port} <= {port for _, port in opened}, opened
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in opened), opened
    finally:
        proc.stop()
