"""Prefect's temporary server, launched by a command before its imports and handed to Prefect
before its flow (``decflow.flows.cli.prefect_server``)."""

import json
import os
import subprocess
import sys

import pytest
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings

from decflow.environment import TEMPORARY_PREFECT_API_ENV
from decflow.flows.cli import prefect_server
from decflow.tasks.server_locks import server_api

# A stand-in for Prefect's server: answers 200 on /api/health; with a marker file that does not
# exist yet, creates it and exits 3 first (uvicorn's status when its port was taken).
FAKE = r"""
import http.server, os, sys
port, marker = int(sys.argv[1]), sys.argv[2]
if marker != "-" and not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(3)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.fixture
def no_server(monkeypatch):
    """No PREFECT_API_URL and no temporary server of this process yet (the flows' test
    harness sets both); both come back after the test."""
    monkeypatch.delitem(SubprocessASGIServer._instances, None, raising=False)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        yield


def _fake(monkeypatch, marker: str = "-", status: int | None = None) -> list[int]:
    ports = []

    def command(port: int):
        ports.append(port)
        if status is not None:
            return [sys.executable, "-c", f"raise SystemExit({status})"], None
        return [sys.executable, "-c", FAKE, str(port), marker], None

    monkeypatch.setattr(prefect_server, "server_command", command)
    return ports


def test_the_server_is_prefect_s_own_command_environment_and_ports(monkeypatch):
    """The launched server is the process Prefect's ``SubprocessASGIServer`` would start: the
    same command line and environment (checked against Prefect's own, so a Prefect upgrade
    that changes them fails here), on a port of its range."""
    import prefect.server.api.server as prefect_module

    launched = []
    monkeypatch.setattr(prefect_module.subprocess, "Popen",
                        lambda args, env: launched.append((args, env)))
    server = SubprocessASGIServer(port=8123)
    monkeypatch.delitem(SubprocessASGIServer._instances, 8123)
    server._run_uvicorn_command()
    assert launched == [prefect_server.server_command(8123)]
    assert prefect_server.PORT_RANGE == SubprocessASGIServer._port_range
    assert prefect_server.free_port() in SubprocessASGIServer._port_range


# A command's process, without the flows' test harness: launches the stand-in, waits for it,
# and prints what Prefect then sees, before and after the server's exit handler.
COMMAND = r"""
import json, os, sys
from decflow.environment import TEMPORARY_PREFECT_API_ENV
from decflow.flows.cli import prefect_server
fake, marker = sys.argv[1], sys.argv[2]
ports = []
def command(port):
    ports.append(port)
    return [sys.executable, "-c", fake, str(port), marker], None
prefect_server.server_command = command
wait = prefect_server.start_prefect_server()
early = wait.__self__
seen = {"running_before_wait": early.process.poll() is None}
wait()
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.utilities.urls import url_for
from decflow.tasks.server_locks import server_api
process = early.process
with get_client(sync_client=True) as client:
    seen.update(ports=ports, port=early.port, api_url=PREFECT_API_URL.value(),
                client_url=str(client.api_url),
                view_at=url_for("flow-run", obj_id="e4e53bfc-01fa-4026-bb4b-827e2cd433a1"),
                server_modules="prefect.server.api.server" in sys.modules,
                shared_server=server_api())
early.stop()  # its exit handler
seen.update(exited=process.poll() is not None, api_url_after=PREFECT_API_URL.value(),
            env_after=[k for k in ("PREFECT_API_URL", "PREFECT_UI_URL", TEMPORARY_PREFECT_API_ENV)
                       if k in os.environ])
print(json.dumps(seen))
"""


def _command(tmp_path, marker: str = "-") -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    out = subprocess.run([sys.executable, "-c", COMMAND, FAKE, marker], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_server_starts_first_and_is_prefects_api_before_the_flow(tmp_path):
    """``start_prefect_server`` launches the server and returns at once; ``wait`` returns once
    it answers, with the server made this process's Prefect API: the flow's client uses it,
    without Prefect's server modules in the command's process, and no "View at" link to a UI
    it does not have. It is no server that other runs share: the night's slot is not taken on
    it. Its exit handler stops it and leaves no API URL behind."""
    seen = _command(tmp_path)
    address = f"http://127.0.0.1:{seen['port']}/api"
    assert seen["running_before_wait"] and seen["ports"] == [seen["port"]]
    assert seen["api_url"] == address and seen["client_url"].rstrip("/") == address
    assert seen["view_at"] is None and not seen["server_modules"]
    assert seen["shared_server"] is None
    assert seen["exited"] and seen["api_url_after"] is None and seen["env_after"] == []


def test_a_server_given_is_shared_and_a_commands_own_is_not(monkeypatch):
    """``server_locks.server_api``: the night's slot is taken on a server given by
    ``PREFECT_API_URL``, not on the temporary one a command points Prefect at."""
    url = "http://127.0.0.1:8123/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        monkeypatch.setenv(TEMPORARY_PREFECT_API_ENV, "http://127.0.0.1:8124/api")
        assert server_api() == url
        monkeypatch.setenv(TEMPORARY_PREFECT_API_ENV, url)
        assert server_api() is None


def test_a_taken_port_is_given_up_for_another_as_prefect_does(tmp_path):
    seen = _command(tmp_path, marker=str(tmp_path / "taken-once"))
    assert len(seen["ports"]) == 2 and seen["port"] == seen["ports"][-1]
    assert seen["api_url"] == f"http://127.0.0.1:{seen['ports'][-1]}/api"


def test_a_settings_context_of_its_own_keeps_its_api_and_the_server_is_stopped(monkeypatch,
                                                                               no_server):
    """Code that runs a command inside its own Prefect settings context (tests, a caller's
    ``temporary_settings``) would not see the server: it is stopped, and the flow's client
    starts Prefect's own as without it."""
    _fake(monkeypatch)
    wait = prefect_server.start_prefect_server()
    early = wait.__self__
    process = early.process
    wait()
    assert process.poll() is not None and early.process is None and not early.handed_over
    assert PREFECT_API_URL.value() is None and "PREFECT_API_URL" not in os.environ


def test_a_server_that_does_not_start_is_stopped_and_left_to_the_flow(monkeypatch, no_server):
    """A server that exits before answering is not handed over: the flow's client then starts
    Prefect's server itself, and reports why it cannot."""
    _fake(monkeypatch, status=1)
    wait = prefect_server.start_prefect_server()
    early = wait.__self__
    wait()
    assert early.process is None and not early.handed_over
    assert not SubprocessASGIServer().running


def test_a_command_that_ends_before_its_flow_stops_the_server_it_launched(monkeypatch,
                                                                         no_server):
    _fake(monkeypatch)
    early = prefect_server.start_prefect_server().__self__
    process = early.process
    early.stop()  # what its exit handler does
    assert process.poll() is not None and not SubprocessASGIServer().running


def test_with_a_server_given_nothing_is_launched(monkeypatch):
    def command(port):
        raise AssertionError("launched a server")

    monkeypatch.setattr(prefect_server, "server_command", command)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        prefect_server.start_prefect_server()()
