"""A fitted model as MLflow stores it: a "models from code" pyfunc (``pyfunc_model.py``) with
the encoder (JSON) and the estimator (safetensors) as artifacts, the decflow package as code,
pinned pip requirements, a signature, and the file manifest; and its registration as a new
version that holds no alias until a promotion gate judges it."""

import json
import shutil
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version as _dist_version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from decflow.data.sources import Lineage
from decflow.data.validation import ValidationResult
from decflow.model.scoring import as_model_input, score_frame
from decflow.registry.client import mlflow_client
from decflow.registry.integrity import MANIFEST_TAG, stored_manifest_digest, write_manifest
from decflow.registry.names import Artifact, Tag
from decflow.registry.versions import DECISION_TAG, PENDING

# What a scoring environment needs besides mlflow itself; the decflow package travels with
# the model as code (code_paths), so it need not be installed there.
_REQUIREMENTS = ("torch", "numpy", "pandas", "scikit-learn", "safetensors", "scipy", "pyarrow",
                 "pydantic", "pyyaml")
_PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


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
    requirements and a signature inferred from ``input_example`` and its predictions. Before
    upload, the sha256 of every file goes into ``decflow-manifest.json`` (uploaded with them)
    and the manifest's own sha256 into the LoggedModel tag ``decflow.manifest_sha256``, from
    the bytes written here (``register_version`` copies it to the version).

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
    client = mlflow_client(tracking_uri)
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
                "encoder": str(encoder.save(tmp / Artifact.MODEL_ENCODER)),
                "estimator": str(estimator.save(tmp / Artifact.MODEL_ESTIMATOR))}
            example = as_model_input(encoder, input_example)
            signature = model_signature(encoder, example,
                                        score_frame(encoder, estimator, example))
            mlflow_model = Model(artifact_path=logged.artifact_location,
                                 model_uuid=logged.model_id, run_id=run_id,
                                 model_id=logged.model_id)
            local = tmp / "model"
            mlflow.pyfunc.save_model(
                local, python_model=str(_PYFUNC_CODE), artifacts=artifacts,
                code_paths=[str(Path(__file__).parents[1])], signature=signature,
                input_example=example, pip_requirements=pip_requirements(),
                mlflow_model=mlflow_model)
            for cache in list(local.rglob("__pycache__")):
                shutil.rmtree(cache, ignore_errors=True)
            digest = write_manifest(local)
            client.set_logged_model_tags(logged.model_id, {MANIFEST_TAG: digest})
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"


def version_tags(lineage: Lineage, run_date: str, config_digest: str,
                 validation: ValidationResult, metrics: dict[str, float],
                 alignment: dict | None = None, profile: dict | None = None) -> dict[str, str]:
    """The tags a new version is registered with: its training data (lineage, run date), the
    config digest, the validation outcome, its metrics (``metric.<name>``) and, when given,
    the cluster-id alignment with the champion and the pointer to its cluster profiles."""
    tags = {Tag.DATA_SOURCE_URI: lineage.source_uri,
            Tag.DATA_PARTITIONS: json.dumps(lineage.partitions),
            Tag.DATA_MISSING_PARTITIONS: json.dumps(lineage.missing_partitions),
            Tag.DATA_N_ROWS: str(lineage.n_rows), Tag.DATA_DIGEST: lineage.digest,
            Tag.DATA_RUN_DATE: run_date, "config_digest": config_digest,
            Tag.VALIDATION_SUCCESS: str(validation.success),
            Tag.VALIDATION_N_EXPECTATIONS: str(len(validation.results)),
            **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}
    if alignment is not None:
        tags.update({Tag.ALIGNMENT_REFERENCE_VERSION: alignment["reference_version"],
                     Tag.ALIGNMENT_MAPPING: json.dumps(alignment["mapping"])[:4000],
                     "metric.label_churn": f"{alignment['label_churn']:.6g}",
                     "metric.label_churn_unaligned": f"{alignment['label_churn_unaligned']:.6g}"})
    if profile is not None:
        tags[Tag.PROFILES_ARTIFACT] = profile["artifact"]
    return tags


def register_version(tracking_uri: str, model_uri: str, model_name: str, *, run_id: str,
                   tags: dict[str, str] | None = None) -> ModelVersion:
    """Register ``model_uri`` (from ``log_model``, or the artifact URI of a model directory it
    wrote) as a new version of ``model_name``; no alias moves.

    The registered model is created if missing. The new version gets ``tags``, the tag
    ``promotion.decision`` = ``pending`` (until a promotion gate judges it, see
    ``decflow.registry.aliases.apply_verdict``) and ``decflow.manifest_sha256``, the digest of its
    file manifest (from the LoggedModel's tag, else of the stored manifest). Even the first
    version gets no alias: only a judged version may hold one.

    Returns:
        The new ``ModelVersion``.

    Raises:
        ValueError: the model has no ``decflow-manifest.json`` (not written by ``log_model``).
    """
    client = mlflow_client(tracking_uri)
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
    source, model_id, digest = model_uri, None, None
    if model_uri.startswith("models:/m-"):
        # The sqlite/SQL registry resolves a "models:/<model_id>" source through a client on
        # MLflow's global tracking URI (an MLflow TODO), so resolve it here with our own.
        model_id = model_uri.removeprefix("models:/").rstrip("/")
        logged = client.get_logged_model(model_id)
        source, digest = logged.artifact_location, logged.tags.get(MANIFEST_TAG)
    if digest is None:
        digest = stored_manifest_digest(tracking_uri, source)
    version_tags = {DECISION_TAG: PENDING, **{k: str(v) for k, v in (tags or {}).items()},
                    MANIFEST_TAG: digest}
    mv = client.create_model_version(model_name, source=source, run_id=run_id,
                                     tags=version_tags, model_id=model_id)
    if model_id is not None:
        _link_version(client, model_id, model_name, mv.version)
    return client.get_model_version(model_name, mv.version)


def _link_version(client: MlflowClient, model_id: str, model_name: str, version: str) -> None:
    """Record the version on the LoggedModel (tag ``mlflow.modelVersions``), as
    ``mlflow.register_model`` does; the SQL registry does not keep a version's model_id."""
    key = "mlflow.modelVersions"
    existing = client.get_logged_model(model_id).tags.get(key)
    links = json.loads(existing) if existing else []
    links.append({"name": model_name, "version": str(version)})
    client.set_logged_model_tags(model_id, {key: json.dumps(links)})
