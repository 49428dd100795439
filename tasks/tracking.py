"""MLflow run lifecycle for flows (a context manager, not a task: it brackets tasks), and the
links between a Prefect run and its MLflow run."""

import contextlib
import datetime as dt
import os

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from prefect import task
from prefect.cache_policies import NO_CACHE

from decflow import __version__
from decflow.config import PipelineConfig, dump_config, redact
from decflow.tracking import ensure_experiment


def client(config: PipelineConfig) -> MlflowClient:
    uri = config.tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def prefect_run_tags() -> dict[str, str]:
    """The Prefect flow run this process is in, as MLflow tags (empty outside a flow run)."""
    from prefect.runtime import deployment, flow_run

    if flow_run.id is None:
        return {}
    tags = {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name,
            "prefect.flow_name": flow_run.flow_name}
    if deployment.id:
        tags["prefect.deployment"] = f"{flow_run.flow_name}/{deployment.name}"
    if flow_run.ui_url:
        tags["prefect.flow_run_url"] = flow_run.ui_url
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
    flow run it belongs to); mark it FAILED if the body raises."""
    if config.registry.tracking_uri is None:
        os.makedirs(config.home, exist_ok=True)
    mlflow = client(config)
    exp = ensure_experiment(config.tracking_uri(), config.registry.experiment,
                            config.artifact_location())
    run = mlflow.create_run(exp, run_name=run_name, tags={
        "decflow.version": __version__, "decflow.config_digest": config.digest(),
        **prefect_run_tags(), **(tags or {})})
    run_id = run.info.run_id
    try:
        params = config.flatten()
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in items[i:i + 100]])
        log_text(config, run_id, dump_config(config), "config.yaml")
        yield run_id
    except BaseException as exc:
        mlflow.set_tag(run_id, "decflow.error", redact(f"{type(exc).__name__}: {exc}")[:5000])
        mlflow.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def log_text(config: PipelineConfig, run_id: str, text: str, path: str) -> None:
    client(config).log_text(run_id, text, path)


def log_dict(config: PipelineConfig, run_id: str, data: dict, path: str) -> None:
    client(config).log_dict(run_id, data, path)


def log_metrics(config: PipelineConfig, run_id: str, metrics: dict[str, float],
                step: int = 0) -> None:
    now = int(dt.datetime.now().timestamp() * 1000)
    client(config).log_batch(run_id, metrics=[Metric(k, float(v), now, step)
                                              for k, v in metrics.items()])


def log_figure(config: PipelineConfig, run_id: str, figure, path: str) -> None:
    client(config).log_figure(run_id, figure, path)


@task(name="link_mlflow_run", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
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
                             description="registered model version (alias challenger)")
    return links
