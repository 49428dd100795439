"""Deployments against the harness's Prefect server: deployments/prefect.yaml (through the real
`prefect deploy`) and the `decflow serve` definitions give the same three deployments, the nightly
one never runs twice at once, and a scheduled run labels the night before its scheduled time."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect import flow, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectAlreadyExists
from prefect.flow_engine import run_flow
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Completed, Pending, Running, Scheduled
from typer.testing import CliRunner

from flowkit import RUN_DATE, tiny_config, write_source
from decflow.config import PipelineConfig, dump_config
from decflow.data import partitioned
from decflow.flows import deployments as defs
from decflow.flows.cli import app
from decflow.flows.recluster import default_run_date, recluster, yesterday

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
NIGHTLY = "recluster/nightly"
NAMES = [NIGHTLY, "backfill/on-demand", "promote/on-demand"]


def _read_back(names=NAMES) -> dict:
    """What the server holds for each deployment, in a form both sources can be compared in."""
    out = {}
    with get_client(sync_client=True) as client:
        for name in names:
            d = client.read_deployment_by_name(name)
            limit = d.global_concurrency_limit
            out[name] = {
                "schedules": [(s.schedule.cron, s.schedule.timezone, s.active)
                              for s in d.schedules],
                "parameters": {k: PipelineConfig.model_validate(v) if k == "config" else v
                               for k, v in d.parameters.items()},
                "concurrency": (limit.limit if limit else None,
                                d.concurrency_options.collision_strategy.value
                                if d.concurrency_options else None),
                "tags": sorted(d.tags),
                "enforce_parameter_schema": d.enforce_parameter_schema,
                "parameter_names": sorted(d.parameter_openapi_schema["properties"]),
                "job_variables": d.job_variables,
            }
    return out


@pytest.fixture(scope="module")
def from_yaml():
    """`prefect deploy --all` of deployments/prefect.yaml, as the README says, then read back."""
    from prefect.workers.process import ProcessWorker

    spec = yaml.safe_load(PREFECT_YAML.read_text())
    pool = spec["definitions"]["work_pool"]["name"]
    with get_client(sync_client=True) as client:
        try:  # the session's server: another module may have made it (`decflow deploy`)
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            pass
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all",
         "--prefect-file", str(PREFECT_YAML)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("successfully created") == 3, done.stdout
    return _read_back()


@pytest.fixture(scope="module")
def from_serve(from_yaml):
    """The `decflow serve` definitions applied to the same server (after the yaml ones)."""
    for deployment in defs.build_deployments(PipelineConfig()):
        deployment.apply()
    return _read_back()


def test_prefect_yaml_deploys_the_nightly_schedule_and_two_manual_deployments(from_yaml):
    nightly = from_yaml[NIGHTLY]
    assert nightly["schedules"] == [("0 2 * * *", "UTC", True)]
    assert nightly["concurrency"] == (1, "ENQUEUE")
    for name in NAMES[1:]:
        assert from_yaml[name]["schedules"] == []
        assert from_yaml[name]["concurrency"] == (None, None)
    for d in from_yaml.values():
        assert d["parameters"] == {"config": PipelineConfig(home=".decflow")}
        assert d["tags"] == ["decflow"] and d["enforce_parameter_schema"]
        assert "config" in d["parameter_names"]
        # heartbeats, so that the server marks a dead run CRASHED (flows/notifications.py)
        assert d["job_variables"] == {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}}
    assert {"start", "end"} <= set(from_yaml["backfill/on-demand"]["parameter_names"])
    assert "candidate" in from_yaml["promote/on-demand"]["parameter_names"]


def test_serve_definitions_agree_with_prefect_yaml(from_yaml, from_serve):
    # job variables are a work pool's (heartbeats: prefect.yaml and `decflow deploy`); a
    # served deployment's runs are the serving process's children
    assert {name: {**d, "job_variables": None} for name, d in from_serve.items()} == \
        {name: {**d, "job_variables": None} for name, d in from_yaml.items()}
    # ... and with the file itself (the constants the CLI defaults to).
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    nightly = next(d for d in spec["deployments"] if d["entrypoint"].endswith(":recluster"))
    assert nightly["name"] == defs.NIGHTLY
    assert nightly["schedules"] == [{"cron": defs.NIGHTLY_CRON,
                                     "timezone": defs.NIGHTLY_TIMEZONE}]
    assert nightly["concurrency_limit"] == {"limit": defs.NIGHTLY_CONCURRENCY,
                                            "collision_strategy":
                                                defs.NIGHTLY_COLLISION_STRATEGY}


def test_a_second_nightly_run_waits_for_the_first_to_finish(from_serve):
    """ENQUEUE: the server turns the second run's start into AwaitingConcurrencySlot (a
    Scheduled state, retried later) while the first holds the slot; it goes once that ends."""
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(NIGHTLY)
        first, second = (client.create_flow_run_from_deployment(deployment.id)
                         for _ in range(2))
        assert client.set_flow_run_state(first.id, Pending()).status == SetStateStatus.ACCEPT
        assert client.set_flow_run_state(first.id, Running()).status == SetStateStatus.ACCEPT

        blocked = client.set_flow_run_state(second.id, Pending())
        assert blocked.status == SetStateStatus.REJECT
        assert blocked.state.is_scheduled() and blocked.state.name == "AwaitingConcurrencySlot"
        assert client.read_flow_run(second.id).state.name == "AwaitingConcurrencySlot"

        assert _active_slots(client) == 1

        client.set_flow_run_state(first.id, Completed())
        assert client.set_flow_run_state(second.id, Pending()).status == SetStateStatus.ACCEPT
        client.set_flow_run_state(second.id, Cancelled())
        assert _active_slots(client) == 0


def _active_slots(client) -> int:
    return client.read_deployment_by_name(NIGHTLY).global_concurrency_limit.active_slots


def test_server_schedules_the_nightly_runs_at_two_in_the_schedule_zone(tmp_path):
    """The server's own scheduling code (what its scheduler service runs) turns the schedule
    into one run a night at 02:00 local; it also fails if the server cannot insert them
    (prefect 3.8.8 on SQLAlchemy 2.1)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    zone = ZoneInfo("Pacific/Auckland")
    nightly = defs.build_deployments(tiny_config(tmp_path, str(tmp_path / "src")),
                                     timezone=zone.key)[0]
    nightly.name = "schedule-check"
    deployment_id = nightly.apply()
    with get_client(sync_client=True) as client:
        response = client.request(
            "POST", "/deployments/{id}/schedule", path_params={"id": deployment_id},
            json={"start_time": "2026-11-20T00:00:00Z", "end_time": "2026-11-23T00:00:00Z"})
        assert response.is_success, response.text
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id])))
    local = sorted(r.expected_start_time.astimezone(zone) for r in runs)
    assert [t.strftime("%m-%d %H:%M") for t in local] == ["11-21 02:00", "11-22 02:00",
                                                         "11-23 02:00"]
    assert all(r.state.is_scheduled() for r in runs)


@flow
def night_of_this_run() -> dt.date:
    return default_run_date()


@pytest.mark.parametrize("zone, scheduled, night", [
    ("Pacific/Auckland", "2026-11-22T02:00", "2026-11-21"),  # 13:00 UTC on the 21st
    ("Asia/Tokyo", "2026-01-01T02:00", "2025-12-31"),  # 17:00 UTC on 2025-12-31
    ("UTC", "2025-03-01T02:00", "2025-02-28"),
])
def test_run_date_comes_from_the_scheduled_time_in_the_schedule_zone(zone, scheduled, night):
    """Runs started now (late, or after waiting for the slot) label their scheduled night."""
    from prefect.schedules import Cron

    deployment = night_of_this_run.to_deployment(
        "zone-check", schedules=[Cron(defs.NIGHTLY_CRON, timezone=zone)])
    deployment_id = deployment.apply()
    when = dt.datetime.fromisoformat(scheduled).replace(tzinfo=ZoneInfo(zone))
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=when))
    assert run_flow(night_of_this_run, flow_run=run) == dt.date.fromisoformat(night)


def test_run_date_outside_a_flow_run_and_without_a_schedule_is_local_yesterday():
    assert default_run_date() == yesterday()
    assert night_of_this_run() == yesterday()  # a flow run, but not a scheduled one


def test_scheduled_nightly_run_labels_the_night_before(tmp_path):
    """The nightly deployment, its schedule in Auckland (UTC+13 in November); a run scheduled for
    2026-11-22 02:00 there (13:00 UTC on the 21st) and executed now, in-process as a worker
    would, trains on and labels ds=2026-11-21."""
    source = str(tmp_path / "source")
    write_source(source)
    config = tiny_config(tmp_path, source)
    nightly = defs.build_deployments(config, timezone="Pacific/Auckland")[0]
    deployment_id = nightly.apply()
    when = dt.datetime(2026, 11, 22, 2, 0, tzinfo=ZoneInfo("Pacific/Auckland"))
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=when))
    result = run_flow(recluster, flow_run=run)
    assert result["run_date"] == RUN_DATE.isoformat() == "2026-11-21"
    assert os.listdir(config.labels_uri()) == ["ds=2026-11-21"]
    assert len(partitioned.read_partition(config.labels_uri(), "ds", RUN_DATE)) == 90
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_completed()


runner = CliRunner()


def test_serve_command_serves_the_three_deployments(tmp_path, monkeypatch):
    served = []
    monkeypatch.setattr("prefect.serve", lambda *deployments: served.extend(deployments))
    path = tmp_path / "c.yaml"
    config = tiny_config(tmp_path, str(tmp_path / "src"))
    path.write_text(dump_config(config))
    out = runner.invoke(app, ["serve", "--config", str(path), "--timezone", "Europe/Berlin"])
    assert out.exit_code == 0, out.output
    assert [f"{d.flow_name}/{d.name}" for d in served] == NAMES
    assert served[0].schedules[0].schedule.timezone == "Europe/Berlin"
    for d in served:
        assert PipelineConfig.model_validate(d.parameters["config"]) == config


@pytest.mark.parametrize("args, message", [
    (["--timezone", "Mars/Olympus"], "not an IANA time zone"),
    (["--cron", "every night"], "not a valid cron schedule"),
])
def test_serve_command_rejects_a_bad_schedule(monkeypatch, args, message):
    monkeypatch.setattr("prefect.serve", lambda *deployments: pytest.fail("served"))
    out = runner.invoke(app, ["serve", *args])
    assert out.exit_code == 2 and message in out.output
