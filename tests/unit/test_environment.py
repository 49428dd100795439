"""The quiet defaults for Prefect, MLflow and GX: set where unset, never over the user's."""

from decflow.environment import QUIET_DEFAULTS, quiet_defaults


def test_quiet_defaults_fill_what_is_unset_and_keep_what_the_user_set():
    env = {"DO_NOT_TRACK": "0", "PATH": "/bin"}
    assert quiet_defaults(env) is env
    assert env == {**QUIET_DEFAULTS, "DO_NOT_TRACK": "0", "PATH": "/bin"}
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"
