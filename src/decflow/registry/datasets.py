"""The data a run read and wrote, as MLflow datasets (the run page's "Datasets" panel): the
training window as an input, each labels partition written as one more, with the context
``labels (written)``. MLflow 3 records datasets as run inputs only (its run outputs are logged
models), hence the context.

Nothing is copied: a dataset is its location (source), a digest and a profile (rows, partitions).
The window's digest is the scan's (sha256 over each file's path, size and Parquet footer), so
two runs over the same files show the same dataset.
"""

import json
import warnings

from mlflow.entities import Dataset, DatasetInput, InputTag

from decflow.data.sources import Lineage
from decflow.redaction import redact
from decflow.registry.client import mlflow_client, service_guard

CONTEXT = "mlflow.data.context"
TRAINING = "training"
LABELS = "labels (written)"


def _source(uri: str) -> tuple[str, str]:
    """MLflow's (source type, source JSON) of a dataset location, secrets redacted."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    clean = redact(uri)
    try:
        with warnings.catch_warnings():  # MLflow registers the local source type twice
            warnings.filterwarnings("ignore", category=UserWarning,
                                    message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(clean)
        return source._get_source_type(), source.to_json()
    except Exception:  # noqa: BLE001 - a scheme MLflow has no source type for
        return "external", json.dumps({"uri": clean})


def window_dataset(lineage: Lineage, name: str) -> Dataset:
    """The training window: the source table's location, the scan's digest, rows and
    partitions (and those missing) in its profile."""
    kind, source = _source(lineage.source_uri)
    first, last = (lineage.partitions[0], lineage.partitions[-1]) if lineage.partitions \
        else ("", "")
    return Dataset(name=f"{name} {first}..{last}" if first else name,
                   digest=lineage.digest[:16], source_type=kind, source=source,
                   profile=json.dumps({"num_rows": lineage.n_rows,
                                       "partitions": lineage.partitions,
                                       "missing_partitions": lineage.missing_partitions,
                                       "columns": lineage.columns}))


def labels_dataset(path: str, day: str, rows: int, model: str, version: str) -> Dataset:
    """One labels partition as written: its file, rows, and the model version that wrote it."""
    import hashlib

    kind, source = _source(path)
    digest = hashlib.sha256(f"{path}|{rows}|{model}|{version}".encode()).hexdigest()[:16]
    return Dataset(name=f"labels {day}", digest=digest, source_type=kind, source=source,
                   profile=json.dumps({"num_rows": rows, "model": model,
                                       "model_version": version}))


def log_datasets(tracking_uri: str, run_id: str, datasets: list[tuple[Dataset, str]]) -> None:
    """Log ``(dataset, context)`` pairs as the run's dataset inputs."""
    inputs = [DatasetInput(dataset=d, tags=[InputTag(key=CONTEXT, value=context)])
              for d, context in datasets]
    with service_guard(tracking_uri):
        mlflow_client(tracking_uri).log_inputs(run_id, datasets=inputs)
