"""Prefect's temporary server, launched by a command first thing (``start_prefect_server``).

Without ``PREFECT_API_URL`` a flow starts Prefect's temporary server (its
``SubprocessASGIServer``) when it begins, and a command used to start it in a thread once it
had imported Prefect's server modules. Either way the server's own start (about 4.5 s of CPU:
uvicorn, Prefect's app, its database) came after the command's imports, so a `decflow score`
of a 1M-row night began its flow 13 s in. Here the command launches the same server process
as soon as it has read its config (Prefect's settings only, about 1 s of imports), and points
Prefect at it just before the flow, once it answers, as a ``PREFECT_API_URL`` would: the
command then never imports Prefect's server modules, which Prefect's own temporary server needs
in the command's process (about 2 s). Measured on a 1M-row `decflow score`, 3 rounds taking
turns: its flow began at 12.5, 10.6 and 13.8 s against 19.4, 15.9 and 14.1 s when the server
was handed over as Prefect's ``SubprocessASGIServer``.
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

from decflow.environment import TEMPORARY_PREFECT_API_ENV

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
        its port was taken), then makes it this process's ``PREFECT_API_URL`` (``use_api_url``):
        the flow's client uses it, and it stops at exit, with Prefect's line. A server that
        exits or does not answer in time is stopped: the flow then starts Prefect's own and
        reports why it cannot. A command that ends before ``wait`` stops the server it
        launched.
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
        """Make the server this process's Prefect API (see ``start_prefect_server``), or stop
        it if it did not start."""
        if self.process is None or self.handed_over:
            return
        from prefect.settings import (PREFECT_API_URL,
                                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)

        if not self.answers(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()):
            self.stop()
            return
        url = f"{self.address}/api"
        use_api_url(url)
        if PREFECT_API_URL.value() != url:  # a settings context of its own
            use_api_url(None)
            self.stop()
            return
        self.handed_over = True

    def stop(self) -> None:
        """Stop the server (at exit: after Prefect's own exit handlers, registered later,
        have sent the last logs and events) and forget its address."""
        process, self.process = self.process, None
        if self.handed_over:
            self.handed_over = False
            use_api_url(None)
            from prefect.logging import get_logger

            get_logger().info("Stopping temporary server on %s", self.address)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def use_api_url(url: str | None) -> None:
    """Point every Prefect client of this process at ``url`` (None: back to none), as
    ``PREFECT_API_URL`` set before the command would: the flow's client, its log and event
    workers. Unlike Prefect's own temporary server, this needs none of Prefect's server
    modules in this process (about 2 s of imports, on the command's way to its flow).

    It stays this command's own server (``TEMPORARY_PREFECT_API_ENV``): what needs a server
    that other runs share, such as the night's slot, is skipped as without one. The server has
    no UI, so unless ``PREFECT_UI_URL`` names one, it is set empty: Prefect
    would otherwise print a "View at" link to the API's address for each flow run.
    """
    from prefect.context import refresh_global_settings_context

    if url is None:
        for key, before in _REPLACED.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
        _REPLACED.clear()
    else:
        values = {"PREFECT_API_URL": url, TEMPORARY_PREFECT_API_ENV: url}
        if "PREFECT_UI_URL" not in os.environ:
            values["PREFECT_UI_URL"] = ""
        for key, value in values.items():
            _REPLACED.setdefault(key, os.environ.get(key))
            os.environ[key] = value
    refresh_global_settings_context()


_REPLACED: dict[str, str | None] = {}  # what use_api_url set, with the value it had before


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
