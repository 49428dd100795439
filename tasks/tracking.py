"""MLflow run lifecycle for flows (a context manager, not a task: it brackets tasks)."""

import contextlib
import datetime as dt
import os

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

from decflow import __version__
from decflow.config import PipelineConfig, dump_config
from decflow.tracking import ensure_experiment


def client(config: PipelineConfig) -> MlflowClient:
    uri = config.tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def tracked_run(config: PipelineConfig, run_name: str, tags: dict[str, str] | None = None):
    """Start an MLflow run (params = the flattened config); mark it FAILED if the body raises."""
    if config.registry.tracking_uri is None:
        os.makedirs(config.home, exist_ok=True)
    mlflow = client(config)
    exp = ensure_experiment(config.tracking_uri(), config.registry.experiment,
                            config.artifact_location())
    run = mlflow.create_run(exp, run_name=run_name, tags={
        "decflow.version": __version__, "decflow.config_digest": config.digest(),
        **(tags or {})})
    run_id = run.info.run_id
    try:
        params = config.flatten()
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in items[i:i + 100]])
        log_text(config, run_id, dump_config(config), "config.yaml")
        yield run_id
    except BaseException as exc:
        mlflow.set_tag(run_id, "decflow.error", f"{type(exc).__name__}: {exc}"[:5000])
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
