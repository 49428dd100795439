"""MLflow helpers: experiments, metric streaming, the logged pyfunc model and registry aliases.

Every function takes the tracking URI (or an ``MlflowClient``) explicitly and works through
``MlflowClient``; nothing sets MLflow's process-wide tracking/registry URI or active run, so
several pipelines (or tests) can use different stores in one process. The registry lives in the
tracking store (a database backend such as ``sqlite:///...``; MLflow 3 has no file registry).

``mlflow.pyfunc.load_model("models:/<name>@<alias>")`` also works, but only where MLflow's global
tracking URI (e.g. ``MLFLOW_TRACKING_URI``) points at the store; ``load_scorer`` does not need it.

Aliases, no stages: ``champion`` serves labels, ``challenger`` is the newest candidate,
``previous`` the last champion (for rollback).
"""

import json
import logging
import math
import shutil
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version as _dist_version
from pathlib import Path
from typing import NamedTuple

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from .callbacks import Callback
from .estimator import DeepEmbeddedClustering
from .features import FeatureEncoder

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)

# What a scoring environment needs besides mlflow itself; the decflow package travels with
# the model as code (code_paths), so it need not be installed there.
_REQUIREMENTS = ("torch", "numpy", "pandas", "scikit-learn", "safetensors", "scipy", "pyarrow",
                 "pydantic", "pyyaml")
_PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ scoring
def score_frame(encoder, estimator, df: pd.DataFrame) -> pd.DataFrame:
    """Score rows with a fitted feature encoder and DEC estimator.

    Used by the logged pyfunc and by the flows, so both give identical labels.

    Args:
        encoder: fitted ``decflow.features.FeatureEncoder``.
        estimator: fitted ``decflow.DeepEmbeddedClustering``.
        df: (n rows) with the source feature columns; other columns are ignored.

    Returns:
        DataFrame (n rows, ``df``'s index) with ``cluster_id`` int32, ``confidence`` float32
        (max_j q_ij) and ``distance`` float32 (to the assigned centroid in embedding space).
    """
    if len(df) == 0:
        ids = np.empty(0, np.int32)
        conf = dist = np.empty(0, np.float32)
    else:
        ids, conf, dist = estimator.score_samples(encoder.transform(df))
    return pd.DataFrame({"cluster_id": np.asarray(ids, dtype=np.int32),
                         "confidence": np.asarray(conf, dtype=np.float32),
                         "distance": np.asarray(dist, dtype=np.float32)}, index=df.index)


# --------------------------------------------------------------------------- experiments
def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it (with ``artifact_location``) if missing.

    A deleted experiment of that name is restored. An existing experiment keeps its artifact
    location (MLflow cannot move it); a different one is only logged.
    """
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as exc:  # created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise exc
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if artifact_location and exp.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        _log.info("experiment %r keeps its artifact location %s (asked for %s)",
                  name, exp.artifact_location, artifact_location)
    return exp.experiment_id


# ------------------------------------------------------------------------------ metrics
class MlflowCallback(Callback):
    """Streams training metrics to an MLflow run, batched with ``log_batch``.

    Pretraining logs ``<prefix>pretrain_loss`` at step = epoch; fine-tuning logs
    ``<prefix>kl``, ``<prefix>reconstruction`` and ``<prefix>delta_label`` at step = target
    update index. NaN values (no reconstruction term when gamma=0) are skipped. Metrics are
    sent every ``flush_every`` values and at the end of each phase. A logging failure is
    reported as a warning and does not stop training.
    """

    _MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, client: MlflowClient, run_id: str, prefix: str = "",
                 flush_every: int = 200):
        self.client = client
        self.run_id = run_id
        self.prefix = prefix
        self.flush_every = max(1, min(flush_every, self._MAX_BATCH))
        self._pending: list[Metric] = []

    def on_epoch_end(self, phase, epoch, logs):
        if phase == "pretrain":
            values = {"pretrain_loss": logs.get("loss")}
        elif phase == "finetune":
            values = {k: logs.get(k) for k in ("kl", "reconstruction", "delta_label")}
        else:
            values = {f"{phase}_{k}": v for k, v in logs.items()}
        now = int(time.time() * 1000)
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._pending.append(Metric(f"{self.prefix}{key}", float(value), now, int(epoch)))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def on_phase_end(self, phase, logs):
        self.flush()

    def flush(self) -> None:
        """Send buffered metrics now."""
        pending, self._pending = self._pending, []
        try:
            for start in range(0, len(pending), self._MAX_BATCH):
                self.client.log_batch(self.run_id, metrics=pending[start:start + self._MAX_BATCH],
                                      synchronous=True)
        except MlflowException as exc:
            warnings.warn(f"could not log {len(pending)} training metrics to MLflow run "
                          f"{self.run_id}: {exc}", RuntimeWarning, stacklevel=2)


# -------------------------------------------------------------------------------- models
def pip_requirements() -> list[str]:
    """Requirements of the logged model, pinned to the installed versions (``torch~=2.13.0``).

    Local version labels (``+cpu``) are dropped so that a CUDA build satisfies them too.
    """
    reqs = [f"mlflow=={mlflow.__version__}"]
    for dist in _REQUIREMENTS:
        try:
            v = _dist_version(dist).split("+")[0]
        except PackageNotFoundError:
            reqs.append(dist)
            continue
        parts = v.split(".")
        reqs.append(f"{dist}~={'.'.join(parts[:3])}" if len(parts) >= 3 else f"{dist}=={v}")
    return reqs


def as_model_input(encoder, df: pd.DataFrame) -> pd.DataFrame:
    """The encoder's input columns of ``df``, numeric ones float64, as the pyfunc signature wants.

    MLflow's schema check refuses int64 -> float64 ("can not safely convert") and pandas turns
    an integer column with missing values into float64, so numeric features are declared
    double and passed as float64. Categorical columns keep their dtype: the encoder compares
    their ``str`` values, and 1 -> 1.0 would change them.
    """
    schema = encoder.schema()
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns: {missing} "
                         f"(the frame has {list(map(str, df.columns))[:20]})")
    numeric = [c for c, spec in schema.items() if spec["kind"] == "numeric"]
    return df[list(schema)].astype({c: "float64" for c in numeric})


def model_signature(encoder, input_example: pd.DataFrame, output: pd.DataFrame) -> ModelSignature:
    """Signature of the logged model, from the encoder's input contract and an example.

    Inputs (``as_model_input``): numeric -> double, text -> string, categorical -> the example's
    type, all optional (the encoder imputes); vector -> ``Array(double)``, required, which takes
    float32 arrays (Parquet list<float>) and Python float lists alike (``Array(float)`` would
    refuse the latter: MLflow does not narrow float64 -> float32). Outputs:
    ``cluster_id`` integer, ``confidence`` and ``distance`` float.
    """
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values; handled above.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        inferred = {spec.name: spec.type for spec in infer_signature(input_example).inputs.inputs}
        outputs = infer_signature(output).inputs
    cols = []
    for col, spec in encoder.schema().items():
        kind = spec["kind"]
        if kind == "vector":
            cols.append(ColSpec(Array(DataType.double), col, required=True))
        elif kind == "numeric":
            cols.append(ColSpec(DataType.double, col, required=False))
        elif kind == "text":
            cols.append(ColSpec(DataType.string, col, required=False))
        else:
            cols.append(ColSpec(inferred[col], col, required=False))
    return ModelSignature(inputs=Schema(cols), outputs=outputs)


def log_model(run_id: str, tracking_uri: str, estimator, encoder, input_example: pd.DataFrame,
              *, name: str = "model", tags: dict[str, str] | None = None) -> str:
    """Log a fitted encoder + estimator as a pyfunc LoggedModel produced by run ``run_id``.

    The model is MLflow "models from code" (``pyfunc_model.py``), with the encoder (JSON) and
    the estimator (safetensors) as artifacts, the decflow package as code, explicit pip
    requirements and a signature inferred from ``input_example`` and its predictions.

    Args:
        run_id: the (active or finished) MLflow run that trained the model; it is not ended.
        tracking_uri: the tracking store holding the run.
        estimator, encoder: fitted ``DeepEmbeddedClustering`` and ``FeatureEncoder``.
        input_example: a few rows of source feature columns (vector columns as lists/arrays).
        name: LoggedModel name.
        tags: extra LoggedModel tags.

    Returns:
        The model URI, ``models:/<model_id>``.
    """
    if len(input_example) == 0:
        raise ValueError("input_example is empty: give a few rows of the source feature columns")
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    # The LoggedModel is created through the client (not mlflow.pyfunc.log_model) so that it
    # lands in the run's experiment and store without touching MLflow's global tracking URI.
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id, name=name, source_run_id=run_id,
        params=dict(run.data.params), tags=tags, model_type="decflow-dec")
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory(prefix="decflow-model-") as tmp:
            tmp = Path(tmp)
            artifacts = {
                "encoder": str(encoder.save(tmp / "artifacts" / "encoder.json")),
                "estimator": str(estimator.save(tmp / "artifacts" / "estimator.safetensors"))}
            example = as_model_input(encoder, input_example)
            signature = model_signature(encoder, example,
                                        score_frame(encoder, estimator, example))
            mlflow_model = Model(artifact_path=logged.artifact_location,
                                 model_uuid=logged.model_id, run_id=run_id,
                                 model_id=logged.model_id)
            local = tmp / "model"
            mlflow.pyfunc.save_model(
                local, python_model=str(_PYFUNC_CODE), artifacts=artifacts,
                code_paths=[str(Path(__file__).parent)], signature=signature,
                input_example=example, pip_requirements=pip_requirements(),
                mlflow_model=mlflow_model)
            for cache in list(local.rglob("__pycache__")):
                shutil.rmtree(cache, ignore_errors=True)
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"


# ------------------------------------------------------------------------------ registry
def register_model(tracking_uri: str, model_uri: str, model_name: str, *, run_id: str,
                   tags: dict[str, str] | None = None) -> ModelVersion:
    """Register ``model_uri`` (from ``log_model``, or an artifact URI) as a new version of
    ``model_name`` and make it the challenger.

    The registered model is created if missing. The new version gets ``tags`` and the alias
    ``challenger``; when the registered model has no ``champion`` yet (first version), it
    becomes the champion too. Other aliases are left to the promotion step.

    Returns:
        The new ``ModelVersion`` (with its aliases as set here).
    """
    client = _client(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(model_name)
        except MlflowException as exc2:  # created concurrently
            if exc2.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
    source, model_id = model_uri, None
    if model_uri.startswith("models:/m-"):
        # The sqlite/SQL registry resolves a "models:/<model_id>" source through a client on
        # MLflow's global tracking URI (an MLflow TODO), so resolve it here with our own.
        model_id = model_uri.removeprefix("models:/").rstrip("/")
        source = client.get_logged_model(model_id).artifact_location
    mv = client.create_model_version(model_name, source=source, run_id=run_id,
                                     tags={k: str(v) for k, v in (tags or {}).items()},
                                     model_id=model_id)
    if model_id is not None:
        _link_version(client, model_id, model_name, mv.version)
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    if get_version(tracking_uri, model_name, CHAMPION) is None:
        client.set_registered_model_alias(model_name, CHAMPION, mv.version)
    return client.get_model_version(model_name, mv.version)


def _link_version(client: MlflowClient, model_id: str, model_name: str, version: str) -> None:
    """Record the version on the LoggedModel (tag ``mlflow.modelVersions``), as
    ``mlflow.register_model`` does; the SQL registry does not keep a version's model_id."""
    key = "mlflow.modelVersions"
    existing = client.get_logged_model(model_id).tags.get(key)
    links = json.loads(existing) if existing else []
    links.append({"name": model_name, "version": str(version)})
    client.set_logged_model_tags(model_id, {key: json.dumps(links)})


def get_version(tracking_uri: str, model_name: str, ref: str) -> ModelVersion | None:
    """The version that ``ref`` (an alias such as "champion", or a version number) points at.

    Returns None when the registered model, alias or version does not exist.
    """
    client = _client(tracking_uri)
    ref = str(ref)
    missing = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
    try:
        if ref.isdigit():
            return client.get_model_version(model_name, ref)
        # The SQL registry reports an unknown alias as INVALID_PARAMETER_VALUE.
        missing.add("INVALID_PARAMETER_VALUE")
        return client.get_model_version_by_alias(model_name, ref)
    except MlflowException as exc:
        if exc.error_code in missing:
            return None
        raise


def model_version_uri(model_name: str, ref: str) -> str:
    """``models:/<name>/<version>`` for a version number, ``models:/<name>@<alias>`` otherwise."""
    ref = str(ref)
    return f"models:/{model_name}/{ref}" if ref.isdigit() else f"models:/{model_name}@{ref}"


def load_scorer(tracking_uri: str, model_name: str, ref: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a registered version (alias or version number) as a pyfunc scorer on CPU.

    Same model as ``mlflow.pyfunc.load_model(model_version_uri(model_name, ref))``, without
    needing MLflow's process-wide tracking/registry URI to point at ``tracking_uri``.

    Raises:
        ValueError: ``ref`` does not name a version of ``model_name``.
    """
    return mlflow.pyfunc.load_model(_download_version(tracking_uri, model_name, ref))


class LoadedModel(NamedTuple):
    """A registered version's fitted parts (unpacks as ``encoder, estimator``)."""

    encoder: FeatureEncoder
    estimator: DeepEmbeddedClustering


def load_components(tracking_uri: str, model_name: str, ref: str, device: str = "cpu"
                    ) -> LoadedModel:
    """The fitted ``(FeatureEncoder, DeepEmbeddedClustering)`` of a registered version.

    For ``score_frame`` on many partitions (both objects reload from their files on workers)
    and for warm starts; gives the same predictions as ``load_scorer``.

    Raises:
        ValueError: ``ref`` does not name a version of ``model_name``.
    """
    with tempfile.TemporaryDirectory(prefix="decflow-load-") as tmp:
        local = Path(_download_version(tracking_uri, model_name, ref, "artifacts", dst_path=tmp))
        return LoadedModel(FeatureEncoder.load(local / "encoder.json"),
                           DeepEmbeddedClustering.load(local / "estimator.safetensors",
                                                       device=device))


def _download_version(tracking_uri: str, model_name: str, ref: str, subpath: str = "",
                      dst_path: str | None = None) -> str:
    """Download a registered version's model directory (or ``subpath`` of it); returns the path.

    Resolves the version through our own client: MLflow's ``models:/`` artifact repository
    looks the alias up in the process-wide registry URI and ignores the one it is given.
    """
    mv = get_version(tracking_uri, model_name, ref)
    if mv is None:
        raise ValueError(f"model {model_name!r} has no version or alias {ref!r} "
                         f"in {tracking_uri}")
    uri = _client(tracking_uri).get_model_version_download_uri(model_name, mv.version)
    if subpath:
        uri = f"{uri.rstrip('/')}/{subpath}"
    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path,
                                               tracking_uri=tracking_uri)


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
