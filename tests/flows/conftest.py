import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session", autouse=True)
def prefect_home(tmp_path_factory):
    """CLI commands default PREFECT_HOME to their config's home; in-process CLI tests would leave
    that in os.environ for later tests, so the session sets one first (setdefault keeps it)."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
