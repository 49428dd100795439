"""Quiet, local defaults for the servers' client libraries, set before Prefect or MLflow is
imported: no telemetry, no analytics, and time for an embedded Prefect server to start on a
loaded laptop. A value the user set always wins."""

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
