"""Prefect's temporary server, launched by a command first thing (``start_prefect_server``).

Without ``PREFECT_API_URL`` a flow starts Prefect's temporary server (its
``SubprocessASGIServer``) when it begins, and a command used to start it in a thread once it
had imported Prefect's server modules. Either way the server's own start (about 4.5 s of CPU:
uvicorn, Prefect's app, its database) came after the command's imports, so a `decflow score`
of a 1M-row night began its flow 13 s in. Here the command launches the same server process
as soon as it has read its config (Prefect's settings only, about 1 s of imports), and hands it
to Prefect just before the flow, once it answers.
"""

import atexit
import logging
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

_log = logging.getLogger(__name__)

# As Prefect's SubprocessASGIServer: its ports, its command and its server-side environment
# (tests/flows/test_prefect_server.py compares them with Prefect's own).
PORT_RANGE = range(8000, 9000)
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}
_PORT_IN_USE = 3  # uvicorn's exit status when its port was taken meanwhile
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def start_prefect_server() -> Callable[[], None]:
    """Launch Prefect's temporary server now where this command's flow would start it (no
    ``PREFECT_API_URL``, ephemeral mode on); with a server given, nothing starts.

    Returns:
        ``wait``: call it before the flow. It waits for the server's health check (at most
        ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, relaunching on another port if
        its port was taken), then makes it this process's ``SubprocessASGIServer``: the flow's
        client uses it, and Prefect stops it at exit, with its usual line. A server that exits
        or does not answer in time is stopped: the flow then starts one itself and reports why
        it cannot. A command that ends before ``wait`` stops the server it launched.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None
    server = EarlyServer()
    server.launch()
    return server.hand_over


class EarlyServer:
    """One launched server process, not yet Prefect's."""

    def __init__(self):
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.handed_over = False
        atexit.register(self.stop)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        from prefect.logging import get_logger

        self.port = free_port()
        args, env = server_command(self.port)
        get_logger().info("Starting temporary server on %s\nSee https://docs.prefect.io/v3/"
                          "concepts/server#how-to-guides for more information on running a "
                          "dedicated Prefect server.", self.address)
        self.process = subprocess.Popen(args, env=env)

    def answers(self, timeout: float) -> bool:
        """Wait until the server's ``/api/health`` answers 200 (True) or it exits, or
        ``timeout`` seconds pass (False). A server whose port was taken is launched again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status == _PORT_IN_USE:
                self.launch()
                continue
            if status is not None:
                _log.debug("Prefect's server exited with status %s before answering", status)
                return False
            try:
                with _DIRECT.open(f"{self.address}/api/health", timeout=5) as reply:
                    if reply.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        _log.debug("Prefect's server did not answer within %g s", timeout)
        return False

    def hand_over(self) -> None:
        """Make the server this process's ``SubprocessASGIServer`` (see
        ``start_prefect_server``), or stop it if it did not start."""
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        if self.process is None or self.handed_over:
            return
        prefects = SubprocessASGIServer()  # the one the flow's client starts: one per process
        if prefects.running or not self.answers(
                PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()):
            self.stop()
            return
        # what SubprocessASGIServer.start leaves once its server answers
        prefects.port, prefects.server_process, prefects.running = (self.port, self.process,
                                                                    True)
        atexit.register(prefects.stop)
        self.handed_over = True

    def stop(self) -> None:
        """Stop the server unless Prefect has it (its own ``stop`` runs at exit)."""
        if self.handed_over or self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def free_port() -> int:
    """A port of Prefect's range that nothing listens on now (Prefect's own choice)."""
    for _ in range(10):
        port = random.choice(PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                time.sleep(random.uniform(0.1, 0.5))
                continue
        return port
    raise RuntimeError("Unable to find an available port after multiple attempts")


def server_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of Prefect's temporary server on ``port``."""
    import prefect
    from prefect.settings import get_current_settings

    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    env = {**os.environ, **SERVER_ENV,
           **get_current_settings().to_environment_variables(exclude_unset=True)}
    return args, env
