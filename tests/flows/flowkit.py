"""Flow-test helpers: the tiny source table and config (from testkit, re-exported so flow tests
import everything from here) and readers of what a run left in Prefect and MLflow."""

# re-exported: flow tests import their helpers from this one module
from testkit import DAYS, RUN_DATE, make_rows, tiny_config, write_source  # noqa: F401


def latest_artifact(key: str) -> str:
    """Data of the newest Prefect artifact with this key (from the test server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0].data


def run_artifacts(flow_run_id: str) -> dict:
    """The Prefect artifacts of one flow run, by key (artifacts without a key left out)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


# --- the MLflow registry of a tiny config (model name "tiny") ---------------------------------
def mlflow_client(config):
    from mlflow import MlflowClient

    return MlflowClient(config.tracking_uri(), registry_uri=config.tracking_uri())


def aliases(config) -> dict[str, str]:
    """alias -> version of the config's registered model."""
    model = mlflow_client(config).get_registered_model(config.registry.model_name)
    return {k: str(v) for k, v in model.aliases.items()}


def version_tags(config, version) -> dict[str, str]:
    return dict(mlflow_client(config).get_model_version(config.registry.model_name,
                                                        str(version)).tags)


def versions(config) -> list[str]:
    """Every registered version of the config's model, sorted."""
    found = mlflow_client(config).search_model_versions(f"name='{config.registry.model_name}'")
    return sorted(str(v.version) for v in found)


def store_state(config) -> tuple:
    """Every label file (size, mtime, bytes) and every registered version and alias: what a
    failed or read-only command must leave as it was."""
    import os
    from pathlib import Path

    files = {}
    for dirpath, _, names in os.walk(config.labels_uri()):
        for n in names:
            p = os.path.join(dirpath, n)
            files[p] = (os.path.getsize(p), os.path.getmtime(p), Path(p).read_bytes())
    return files, versions(config), aliases(config)


def log_by_hand(config, train, run_name: str) -> tuple[str, str]:
    """(run id, model URI) of a model logged without any flow: ``train(X)`` returns the
    estimator for the encoded training window of RUN_DATE."""
    from decflow.data import sources
    from decflow.model.features import FeatureEncoder
    from decflow.registry import packaging, runs

    frame, _ = sources.load_window(config.source, RUN_DATE)
    encoder = FeatureEncoder(config.features)
    est = train(encoder.fit_transform(frame))
    uri = config.tracking_uri()
    exp = runs.ensure_experiment(uri, config.registry.experiment, config.artifact_location())
    client = mlflow_client(config)
    run_id = client.create_run(exp, run_name=run_name).info.run_id
    model_uri = packaging.log_model(run_id, uri, est, encoder, frame.head(5))
    client.set_terminated(run_id)
    return run_id, model_uri


def register_by_hand(config, run_id: str, model_uri: str) -> str:
    """Register a logged model as a validated version of RUN_DATE (no flow, no alias)."""
    from decflow.registry import packaging

    tags = {"validation.success": "True", "data.run_date": RUN_DATE.isoformat()}
    return str(packaging.register_version(config.tracking_uri(), model_uri,
                                          config.registry.model_name, run_id=run_id,
                                          tags=tags).version)
