"""The one way decflow talks to MLflow: a client of one tracking URI (tracking and registry)
whose calls give up within a bounded HTTP budget and turn a server that does not answer into
``decflow.errors.ServiceUnavailable`` naming it. Nothing here sets MLflow's process-wide
tracking or registry URI, so several stores can be used in one process."""

import contextlib
import functools
import os
import re
import time

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from decflow.errors import ServiceUnavailable
from decflow.redaction import redact

# MLflow's HTTP client settings for every client made here, unless the environment sets them.
# MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) wait about 4 minutes per call
# for a server that is down. These give up after (2 + 1) tries x 10 s + 2.5 s of backoff =
# 32.5 s per call at worst (a server that never answers); a closed port fails in about 2 s.
HTTP_BUDGET = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
               # a Retry-After header (429/503) could otherwise make one call wait for minutes
               "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false"}


def bound_http_requests() -> None:
    """Set MLflow's HTTP retry/timeout variables to ``HTTP_BUDGET`` where the process's
    environment does not set them (MLflow reads them at each request)."""
    for key, value in HTTP_BUDGET.items():
        os.environ.setdefault(key, value)


def http_budget() -> dict[str, float]:
    """The HTTP settings in force: ``timeout`` (s per try), ``retries`` and ``seconds``, the
    longest one MLflow call waits for a server that does not answer."""
    from mlflow.environment_variables import (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
                                              MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
                                              MLFLOW_HTTP_REQUEST_MAX_RETRIES,
                                              MLFLOW_HTTP_REQUEST_TIMEOUT)

    timeout = MLFLOW_HTTP_REQUEST_TIMEOUT.get()
    retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    factor = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    jitter = MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get()
    # urllib3: no wait before the first retry, then factor * 2**(n-1) (+ jitter), at most 120 s
    backoff = sum(min(120.0, factor * 2 ** (n - 1) + jitter) for n in range(2, retries + 1))
    return {"timeout": timeout, "retries": retries, "seconds": (retries + 1) * timeout + backoff}


_UNREACHABLE = re.compile(r"Max retries exceeded|Connection refused|Failed to establish a new "
                          r"connection|timed out|RemoteDisconnected|Connection aborted")


def _unreachable(exc: BaseException) -> bool:
    """MLflow's REST client gave up on the server (no connection, timeouts, or retries spent
    on 429/5xx answers), as opposed to an answer such as "not found"."""
    import requests

    seen = exc
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout,
                             requests.exceptions.RetryError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return bool(_UNREACHABLE.search(str(exc)))


@contextlib.contextmanager
def service_guard(tracking_uri: str):
    """Turn MLflow's "gave up on the (http) tracking server" into ``ServiceUnavailable`` naming
    the server (credentials redacted) and the time budget; other errors pass unchanged."""
    start = time.monotonic()
    try:
        yield
    except MlflowException as exc:
        if not tracking_uri.startswith(("http://", "https://")) or not _unreachable(exc):
            raise
        b = http_budget()
        detail = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
        raise ServiceUnavailable(
            f"MLflow tracking server {redact(tracking_uri)} did not answer: gave up after "
            f"{time.monotonic() - start:.1f} s, within its budget of {b['seconds']:.1f} s per "
            f"call ({b['retries'] + 1} tries of up to {b['timeout']} s; "
            f"MLFLOW_HTTP_REQUEST_TIMEOUT={b['timeout']}, "
            f"MLFLOW_HTTP_REQUEST_MAX_RETRIES={b['retries']}). Retry when it is back. "
            f"({detail})") from exc


class _BoundedClient:
    """An ``MlflowClient`` (tracking and registry on one URI) whose calls raise
    ``ServiceUnavailable`` when the server does not answer within the HTTP budget."""

    def __init__(self, tracking_uri: str):
        bound_http_requests()
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def __getattr__(self, name):
        if name.startswith("__") or name == "_client":  # copy/pickle probes; not yet set up
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            with service_guard(self.tracking_uri):
                return attr(*args, **kwargs)

        return call


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """A client of ``tracking_uri`` (tracking and registry) with the outage handling above."""
    return _BoundedClient(tracking_uri)
