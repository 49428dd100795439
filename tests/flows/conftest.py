import os
from typing import NamedTuple

import pytest

from decflow.config import PipelineConfig, dump_config
from flowkit import RUN_DATE, store_state, tiny_config, write_source


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


class Night(NamedTuple):
    config: PipelineConfig
    source: str  # the good source table (three daily partitions)
    result: dict  # what `recluster` returned


@pytest.fixture(scope="session")
def first_night(prefect_harness, tmp_path_factory):
    """One nightly run of the tiny config on a fresh home: version 1 registered (champion and
    challenger), the run date's labels written. Built once and shared by the modules whose tests
    only read it (test_recluster, test_run_links, test_bad_input_catalogue); failed commands
    against it are fine. A test that registers a version, moves an alias or writes labels builds
    its own pipeline: the teardown fails the session if the labels or the registry changed."""
    from decflow.flows.recluster import recluster

    home = tmp_path_factory.mktemp("first-night")
    source = str(home / "source")
    write_source(source)
    config = tiny_config(home, source)
    result = recluster(config=config, run_date=RUN_DATE)
    before = store_state(config)
    yield Night(config, source, result)
    assert store_state(config) == before, "a test changed the shared first night's labels or " \
                                          "registry"


@pytest.fixture
def config_file(tmp_path):
    """A tiny config (home under tmp_path/home) over a good source, as a YAML file."""
    source = str(tmp_path / "src")
    write_source(source)
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(tiny_config(tmp_path / "home", source)))
    return path
