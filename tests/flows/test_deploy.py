"""`decflow deploy`: the three deployments carry the user's own config, deployed runs take their
worker's DECFLOW_* environment, and a config holding a secret is never sent to the server."""

import datetime as dt

import pytest
from mlflow import MlflowClient
from prefect import get_client
from prefect.flow_engine import run_flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled
from typer.testing import CliRunner

from flowkit import RUN_DATE, tiny_config, write_source
from decflow.config import PipelineConfig, dump_config
from decflow.data import partitioned
from decflow.flows.cli import app
from decflow.flows.recluster import recluster

runner = CliRunner()
NAMES = ["recluster/nightly", "backfill/on-demand", "promote/on-demand"]
SENTINEL = "s3ntinel-Pa55word"


@pytest.fixture
def api_url(monkeypatch):
    """The harness's server, as PREFECT_API_URL (what `decflow deploy` requires)."""
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    return PREFECT_API_URL.value()


def _deployment(name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_deploy_creates_the_three_deployments_with_the_users_config(tmp_path, api_url,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config("home", "tables/source", registry={"model_name": "users-model"})
    (tmp_path / "my.yaml").write_text(dump_config(config))
    out = runner.invoke(app, ["deploy", "--config", "my.yaml", "--work-pool", "users-pool",
                              "--timezone", "Europe/Berlin"])
    assert out.exit_code == 0, out.output
    assert "created work pool 'users-pool' (type process)" in out.output
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("users-pool").type == "process"
    for name in NAMES:
        d = _deployment(name)
        assert d.work_pool_name == "users-pool"
        deployed = PipelineConfig.model_validate(d.parameters["config"])
        # the user's table and model, with paths made absolute for the worker
        assert deployed.registry.model_name == "users-model"
        assert deployed.source.uri == str(tmp_path / "tables" / "source")
        assert deployed.home == str(tmp_path / "home")
        assert deployed.model == config.model and deployed.features == config.features
        # every run sends heartbeats: the server marks one that stops CRASHED
        assert d.job_variables == {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}}
    assert _deployment(NAMES[0]).schedules[0].schedule.timezone == "Europe/Berlin"
    assert "created automation 'decflow/users-model: unresponsive runs' (CRASHED after 120 s " \
           "without a heartbeat)" in out.output
    with get_client(sync_client=True) as client:
        [zombie] = client.read_automations_by_name("decflow/users-model: unresponsive runs")
    ids = {f"prefect.deployment.{_deployment(n).id}" for n in NAMES}
    assert set(zombie.trigger.match_related.model_dump()["prefect.resource.id"]) == ids
    assert zombie.trigger.within.total_seconds() == 120
    # deploying again updates in place (same ids, pool kept)
    first = _deployment(NAMES[0]).id
    again = runner.invoke(app, ["deploy", "--config", "my.yaml", "--work-pool", "users-pool"])
    assert again.exit_code == 0 and "created work pool" not in again.output
    assert "updated automation 'decflow/users-model: unresponsive runs'" in again.output
    assert _deployment(NAMES[0]).id == first
    assert _deployment(NAMES[0]).schedules[0].schedule.timezone == "UTC"


@pytest.mark.parametrize("target, message", [
    ("ftp://hooks.example.com/x", "'ftp://hooks.example.com/...': expected a webhook URL"),
    ("block:slack-webhook", "'block:slack-webhook': a block reference is block:<block type "
                            "slug>/<block name>"),
    ("block:slack-webhook/nobody-made-it", "block:slack-webhook/nobody-made-it: no block "
                                           "'nobody-made-it' of type 'slack-webhook'"),
])
def test_deploy_refuses_a_bad_notify_target_naming_it(tmp_path, api_url, monkeypatch, target,
                                                      message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text(dump_config(tiny_config("home", "src")))
    out = runner.invoke(app, ["deploy", "--config", "my.yaml", "--work-pool", "never-made",
                              "--notify", target])
    assert out.exit_code == 2, out.output
    flat = " ".join(out.output.replace("\u2502", " ").split())  # without the box's borders
    assert "Invalid value for --notify: " + message in flat, flat
    with get_client(sync_client=True) as client:  # refused before anything was written
        assert "never-made" not in {p.name for p in client.read_work_pools()}


def test_deploy_refuses_a_config_holding_a_password(tmp_path, api_url):
    config = tiny_config(tmp_path, str(tmp_path / "src"), registry={
        "model_name": "secret-model", "tracking_uri": f"http://decflow:{SENTINEL}@mlflow:5000"})
    path = tmp_path / "my.yaml"
    path.write_text(dump_config(config).replace("***", SENTINEL))  # dump_config redacts
    assert SENTINEL in path.read_text()
    out = runner.invoke(app, ["deploy", "--config", str(path), "--work-pool", "secret-pool"])
    assert out.exit_code == 2
    assert "registry.tracking_uri" in out.output and "worker's environment" in out.output
    assert SENTINEL not in out.output
    with get_client(sync_client=True) as client:
        assert "secret-pool" not in {p.name for p in client.read_work_pools()}
        for d in client.read_deployments():  # the session's server: other tests' too
            assert SENTINEL not in str(d.parameters)
        assert "secret-model" not in {d.parameters["config"]["registry"]["model_name"]
                                      for d in client.read_deployments()
                                      if "config" in d.parameters}


def test_deploy_without_a_server_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    path = tmp_path / "my.yaml"
    path.write_text(dump_config(tiny_config(tmp_path, str(tmp_path / "src"))))
    with temporary_settings(updates={PREFECT_API_URL: None}):  # the harness sets one
        out = runner.invoke(app, ["deploy", "--config", str(path)])
    assert out.exit_code == 2 and "needs a Prefect server" in out.output


def test_a_deployed_run_takes_its_workers_decflow_environment(tmp_path, api_url, monkeypatch):
    """The deployment's parameter names one model; the worker's environment renames it. A run
    of the deployment, executed as a worker executes it, registers under the worker's name."""
    source = str(tmp_path / "source")
    write_source(source)
    path = tmp_path / "my.yaml"
    path.write_text(dump_config(tiny_config(tmp_path, source,
                                            registry={"model_name": "from-parameter"})))
    assert runner.invoke(app, ["deploy", "--config", str(path), "--work-pool",
                               "env-pool"]).exit_code == 0
    nightly = _deployment(NAMES[0])
    monkeypatch.setenv("DECFLOW_REGISTRY__MODEL_NAME", "from-worker-env")
    when = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.timezone.utc)
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(
            nightly.id, state=Scheduled(scheduled_time=when))
    result = run_flow(recluster, flow_run=flow_run)  # parameters from the server, as a worker
    assert result["run_date"] == RUN_DATE.isoformat()
    client = MlflowClient(PipelineConfig(home=str(tmp_path)).tracking_uri())
    assert str(client.get_model_version_by_alias("from-worker-env", "champion").version) == "1"
    assert client.search_registered_models("name='from-parameter'") == []
    labels = partitioned.read_partition(str(tmp_path / "labels"), "ds", RUN_DATE)
    assert set(labels["model_name"]) == {"from-worker-env"}
    with get_client(sync_client=True) as prefect:
        assert prefect.read_flow_run(flow_run.id).name == f"recluster-{RUN_DATE}"
