"""The quiet defaults for Prefect, MLflow and GX: set where unset, never over the user's."""

import pytest

from decflow import environment
from decflow.environment import QUIET_DEFAULTS, quiet_defaults


def test_quiet_defaults_fill_what_is_unset_and_keep_what_the_user_set(monkeypatch):
    monkeypatch.setattr(environment, "_stderr_is_terminal", lambda: True)
    env = {"DO_NOT_TRACK": "0", "PATH": "/bin"}
    assert quiet_defaults(env) is env
    assert env == {**QUIET_DEFAULTS, "DO_NOT_TRACK": "0", "PATH": "/bin"}
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"


@pytest.mark.parametrize("user", [None, "true"])
def test_mlflows_download_bar_is_off_when_stderr_is_no_terminal(monkeypatch, user):
    monkeypatch.setattr(environment, "_stderr_is_terminal", lambda: False)
    env = {} if user is None else {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": user}
    quiet_defaults(env)
    assert env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == (user or "false")
