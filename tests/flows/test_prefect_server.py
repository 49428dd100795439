"""Prefect's temporary server, launched by a command before its imports and handed to Prefect
before its flow (``decflow.flows.cli.prefect_server``)."""

import sys

import pytest
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings

from decflow.flows.cli import prefect_server

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


def test_the_server_starts_first_and_is_handed_to_prefect_before_the_flow(monkeypatch,
                                                                          no_server):
    """``start_prefect_server`` launches the server and returns at once; ``wait`` returns once
    it answers, with the server made Prefect's: the flow's client uses it, and Prefect's
    ``stop`` (at exit, with its line) ends it."""
    ports = _fake(monkeypatch)
    wait = prefect_server.start_prefect_server()
    early = wait.__self__
    assert early.process.poll() is None and not SubprocessASGIServer().running
    wait()
    prefects = SubprocessASGIServer()
    assert ports == [early.port] and early.handed_over
    assert (prefects.running, prefects.port, prefects.server_process) == (
        True, early.port, early.process)
    process = early.process
    early.stop()  # at exit: Prefect's now, left to Prefect's stop
    assert process.poll() is None
    prefects.stop()
    assert process.poll() is not None


def test_a_taken_port_is_given_up_for_another_as_prefect_does(monkeypatch, no_server, tmp_path):
    ports = _fake(monkeypatch, marker=str(tmp_path / "taken-once"))
    wait = prefect_server.start_prefect_server()
    wait()
    prefects = SubprocessASGIServer()
    try:
        assert len(ports) == 2 and prefects.running and prefects.port == ports[-1]
    finally:
        prefects.stop()


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
