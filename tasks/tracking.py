"""MLflow run lifecycle for flows (a context manager, not a task: it brackets tasks), and the
links between a Prefect run and its MLflow run.

Every client here is ``decflow.registry.client.mlflow_client``: MLflow's HTTP retries are
bounded and a server that does not answer raises ``ServiceUnavailable`` (no Prefect retries on top).
"""

import contextlib
import datetime as dt
import logging
import os
import socket
import uuid

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

from decflow import __version__
from decflow.config import PipelineConfig, dump_config
from decflow.errors import ServiceUnavailable
from decflow.redaction import redact
from decflow.registry.client import mlflow_client
from decflow.registry.names import Artifact, Tag
from decflow.registry.runs import ensure_experiment, fail_stale_runs

from .runtime import redact_errors

_log = logging.getLogger("decflow.registry.tracking")
# MLflow runs this process has open (inside ``tracked_run``): never stale.
_OPEN_RUNS: set[str] = set()


def client(config: PipelineConfig) -> MlflowClient:
    return mlflow_client(config.tracking_uri())


def prefect_run_tags() -> dict[str, str]:
    """The Prefect flow run this process is in, as MLflow tags (empty outside a flow run)."""
    from prefect.runtime import deployment, flow_run

    if flow_run.id is None:
        return {}
    tags = {Tag.PREFECT_FLOW_RUN_ID: flow_run.id, Tag.PREFECT_FLOW_RUN_NAME: flow_run.name,
            Tag.PREFECT_FLOW_NAME: flow_run.flow_name}
    if deployment.id:
        tags[Tag.PREFECT_DEPLOYMENT] = f"{flow_run.flow_name}/{deployment.name}"
    if flow_run.ui_url:
        tags[Tag.PREFECT_FLOW_RUN_URL] = flow_run.ui_url
    return tags


def run_url(config: PipelineConfig, run_id: str) -> str:
    """The MLflow run's page in the MLflow UI."""
    exp = client(config).get_run(run_id).info.experiment_id
    return f"{config.mlflow_ui_url()}/#/experiments/{exp}/runs/{run_id}"


def model_version_url(config: PipelineConfig, version: str) -> str:
    """A registered model version's page in the MLflow UI."""
    return f"{config.mlflow_ui_url()}/#/models/{config.registry.model_name}/versions/{version}"


@contextlib.contextmanager
def tracked_run(config: PipelineConfig, run_name: str, tags: dict[str, str] | None = None):
    """Start an MLflow run (params = the flattened config, secrets redacted; tags = the Prefect
    flow run it belongs to, host and pid); mark it FAILED if the body raises, KILLED if the
    process was stopped (``decflow.errors.Stopped``, Ctrl-C).

    When the body fails because the server is down (``ServiceUnavailable``) the run cannot be
    closed: it stays RUNNING, and the next run start with the same ``decflow.flow`` tag marks it
    FAILED (``fail_stale_runs``) once its process is gone. The failure costs one call's HTTP
    budget, no more.
    """
    if config.registry.tracking_uri is None:
        os.makedirs(config.home, exist_ok=True)
    mlflow = client(config)
    exp = ensure_experiment(config.tracking_uri(), config.registry.experiment,
                            config.artifact_location())
    run = mlflow.create_run(exp, run_name=run_name, tags={
        Tag.VERSION: __version__, Tag.CONFIG_DIGEST: config.digest(),
        Tag.HOST: socket.gethostname(), Tag.PID: str(os.getpid()),
        **prefect_run_tags(), **(tags or {})})
    run_id = run.info.run_id
    _OPEN_RUNS.add(run_id)
    try:
        flow = (tags or {}).get(Tag.FLOW)
        try:
            fail_stale_runs(config.tracking_uri(), exp, still_running,
                            tags={Tag.FLOW: flow} if flow else None, by=run_id)
        except MlflowException as exc:  # housekeeping: never the reason a run fails
            _log.warning("could not look for stale MLflow runs: %s", redact(str(exc))[:300])
        params = config.flatten()
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in items[i:i + 100]])
        log_text(config, run_id, dump_config(config), Artifact.CONFIG)
        yield run_id
    except BaseException as exc:
        if not isinstance(exc, ServiceUnavailable):
            # stopped (Ctrl-C; SIGTERM, which Prefect's engine raises as its TerminationSignal
            # inside a flow): KILLED, as MLflow marks an interrupted run
            stopped = isinstance(exc, (KeyboardInterrupt, TerminationSignal))
            error = (f"stopped by {_signal_name(exc)}" if stopped
                     else f"{type(exc).__name__}: {exc}")
            try:
                mlflow.set_tag(run_id, Tag.ERROR, redact(error)[:5000])
                mlflow.set_terminated(run_id, RunStatus.to_string(
                    RunStatus.KILLED if stopped else RunStatus.FAILED))
            except ServiceUnavailable:
                _log.warning("MLflow run %s stays RUNNING (the server went away as it failed); "
                             "the next run marks it FAILED", run_id)
        raise
    finally:
        _OPEN_RUNS.discard(run_id)
    mlflow.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


@contextlib.contextmanager
def system_metrics(config: PipelineConfig, run_id: str):
    """The machine's CPU, memory, disk, network (and GPU) load as the run's ``system/*``
    metrics every ``registry.system_metrics_s`` seconds while the block runs (MLflow's
    monitor, in a thread); nothing when it is 0. A monitor that cannot start is logged."""
    interval = config.registry.system_metrics_s
    if not interval:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    try:
        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval,
                                       tracking_uri=config.tracking_uri())
        monitor.start()
    except Exception as exc:  # noqa: BLE001 - load figures are never why a run fails
        _log.warning("system metrics are off for this run: %s", redact(str(exc))[:300])
        yield
        return
    try:
        yield
    finally:
        monitor.finish()


def _signal_name(exc: BaseException) -> str:
    import signal

    number = getattr(exc, "signal", None) or getattr(exc, "signum", None) or signal.SIGINT
    return signal.Signals(number).name


def still_running(run: Run) -> bool:
    """Whether an MLflow run in state RUNNING may still have a live process behind it.

    Not if: it ran on this host and its pid is gone, or is this process without the run open
    (a killed process leaves its Prefect flow run RUNNING too, so the pid is asked first); or
    its Prefect flow run is in a final state (asked only inside a flow run, where a Prefect
    API is configured). Unknown (another host, no Prefect answer): assumed live.
    """
    tags = run.data.tags
    if run.info.run_id in _OPEN_RUNS:
        return True
    pid = tags.get(Tag.PID, "")
    if tags.get(Tag.HOST) == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False  # its process is gone, whatever Prefect still says
        except PermissionError:
            pass  # another user's process by that pid: ask Prefect
    final = _prefect_run_final(tags.get(Tag.PREFECT_FLOW_RUN_ID))
    return True if final is None else not final


def _prefect_run_final(flow_run_id: str | None) -> bool | None:
    """Whether the Prefect flow run is in a final state; None when that cannot be told."""
    from prefect.runtime import flow_run

    if not flow_run_id or flow_run.id is None:
        return None
    try:
        from prefect import get_client

        with get_client(sync_client=True) as prefect:
            state = prefect.read_flow_run(uuid.UUID(flow_run_id)).state
    except Exception:  # unknown to this Prefect API, or none reachable: fall back to the pid
        return None
    return None if state is None else bool(state.is_final())


def log_text(config: PipelineConfig, run_id: str, text: str, path: str) -> None:
    client(config).log_text(run_id, text, path)


def log_dict(config: PipelineConfig, run_id: str, data: dict, path: str) -> None:
    client(config).log_dict(run_id, data, path)


def log_metrics(config: PipelineConfig, run_id: str, metrics: dict[str, float],
                step: int = 0) -> None:
    now = int(dt.datetime.now().timestamp() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for start in range(0, len(items), 1000):  # MLflow takes at most 1,000 metrics a call
        client(config).log_batch(run_id, metrics=items[start:start + 1000])


def log_figure(config: PipelineConfig, run_id: str, figure, path: str) -> None:
    client(config).log_figure(run_id, figure, path)


@task(name="link_mlflow_run", cache_policy=NO_CACHE)
@redact_errors
def link_mlflow_run(config: PipelineConfig, run_id: str, version: str | None = None
                    ) -> dict[str, str]:
    """Link artifacts on the Prefect run: its MLflow run and the model version it registered."""
    from prefect.artifacts import create_link_artifact

    links = {"mlflow_run": run_url(config, run_id)}
    create_link_artifact(key="mlflow-run", link=links["mlflow_run"],
                         link_text=f"MLflow run {run_id}",
                         description=f"experiment {config.registry.experiment!r}")
    if version is not None:
        links["model_version"] = model_version_url(config, version)
        create_link_artifact(key="mlflow-model-version", link=links["model_version"],
                             link_text=f"{config.registry.model_name} version {version}",
                             description="registered model version (judged by the "
                                         "promotion gate before it holds an alias)")
    return links
