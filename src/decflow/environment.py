"""The process's setup: quiet, local defaults for the servers' client libraries, set before
Prefect or MLflow is imported (no telemetry, no analytics, and time for an embedded Prefect
server to start on a loaded laptop; a value the user set always wins), and an end without the
interpreter's last garbage collections (``end_without_a_final_collection``)."""

import atexit
import gc
import os
from collections.abc import MutableMapping

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    # a loaded laptop can take longer than Prefect's 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Dask's own INFO lines (a nanny starting, a worker closing, ...) are its operators'
    # business: a command shows decflow's lines and Dask's warnings (its workers inherit this)
    "DASK_LOGGING__DISTRIBUTED": "warning",
}

# Set by a command to the API URL of the temporary Prefect server it started for itself
# (``PREFECT_API_URL`` then points there too): no server that other runs share, so nothing that
# needs one (the night's slot on the server, ``tasks.server_locks``) uses it.
TEMPORARY_PREFECT_API_ENV = "DECFLOW_TEMPORARY_PREFECT_API_URL"


def quiet_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set ``QUIET_DEFAULTS`` in ``env`` (default: this process's environment) where unset;
    returns ``env``."""
    env = os.environ if env is None else env
    for key, value in QUIET_DEFAULTS.items():
        env.setdefault(key, value)
    if not _stderr_is_terminal():
        # MLflow's download bar redraws on a terminal; elsewhere (a log file, a service's
        # journal, a pipe) each redraw is one more line
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return env


def _stderr_is_terminal() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


_FREEZE_AT_EXIT: list[bool] = []


def end_without_a_final_collection() -> None:
    """This process ends without the interpreter's last garbage collections (once per process):
    called by every command and by every Dask worker as it warms up.

    A command that ran a flow holds about 600,000 objects (Prefect, MLflow, Dask, pandas) when
    it ends, a worker that scored holds torch's and Great Expectations', and the interpreter's
    teardown collected them all several times over: 1.5-2 s after a `decflow score` printed
    its last line, and 1.6-2.2 s of closing its cluster, whose worker processes end the same
    way (measured: 1M rows, 2 cores). The objects are moved out of the collector's reach
    (``gc.freeze``) at exit, after every exit handler registered since this call (stopping
    Prefect's temporary server, ending the MLflow run, closing Dask clients): those still run,
    and memory is still freed.
    """
    if not _FREEZE_AT_EXIT:
        _FREEZE_AT_EXIT.append(True)
        atexit.register(gc.freeze)
