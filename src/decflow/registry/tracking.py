"""MLflow helpers: experiments, metric streaming, the logged pyfunc model and registry aliases.

Every function takes the tracking URI (or an ``MlflowClient``) explicitly and works through
``MlflowClient``; nothing sets MLflow's process-wide tracking/registry URI or active run, so
several pipelines (or tests) can use different stores in one process. The registry lives in the
tracking store (a database backend such as ``sqlite:///...``; MLflow 3 has no file registry).

Loading: ``load_components`` and ``load_model_safely`` read only the JSON encoder and the
safetensors weights with the installed decflow code; ``load_scorer`` (like
``mlflow.pyfunc.load_model``) executes ``pyfunc_model.py`` and the decflow package stored with
the model, so write access to the artifact store means code execution for whoever loads it that
way. Every decflow loader first checks each file of the model against the sha256 manifest whose
own digest was recorded at registration (version tag ``decflow.manifest_sha256``) and refuses a
changed, added or missing file with ``ModelIntegrityError``.

Outages: clients made here bound MLflow's HTTP retries (``bound_http_requests``) and turn a
server that does not answer into ``decflow.errors.ServiceUnavailable``.

Aliases, no stages: ``champion`` serves labels, ``challenger`` is the newest judged candidate,
``previous`` the last champion (for rollback). Registration sets none: a version is judged first
(see ``decflow.registry.aliases.apply_verdict``).
"""

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version as _dist_version
from pathlib import Path
from typing import NamedTuple

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Run, RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from decflow.config import redact
from decflow.errors import ConfigError, ModelIntegrityError, ServiceUnavailable
from decflow.model.callbacks import Callback
from decflow.model.estimator import DeepEmbeddedClustering
from decflow.model.features import FeatureEncoder
from decflow.model.scoring import score_frame

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
# A version's verdict (set by the promotion gate); "pending" from registration until judged.
DECISION_TAG, PENDING = "promotion.decision", "pending"
# The sha256 of every file of a logged model, and where the manifest's own digest is kept.
MANIFEST = "decflow-manifest.json"
MANIFEST_TAG = "decflow.manifest_sha256"

# MLflow's HTTP client settings for every client made here, unless the environment sets them.
# MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) wait about 4 minutes per call
# for a server that is down. These give up after (2 + 1) tries x 10 s + 2.5 s of backoff =
# 32.5 s per call at worst (a server that never answers); a closed port fails in about 2 s.
HTTP_BUDGET = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
               # a Retry-After header (429/503) could otherwise make one call wait for minutes
               "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false"}

# What a scoring environment needs besides mlflow itself; the decflow package travels with
# the model as code (code_paths), so it need not be installed there.
_REQUIREMENTS = ("torch", "numpy", "pandas", "scikit-learn", "safetensors", "scipy", "pyarrow",
                 "pydantic", "pyyaml")
_PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ outages
def bound_http_requests() -> None:
    """Set MLflow's HTTP retry/timeout variables to ``HTTP_BUDGET`` where the process's
    environment does not set them (MLflow reads them at each request)."""
    for key, value in HTTP_BUDGET.items():
        os.environ.setdefault(key, value)


def http_budget() -> dict[str, float]:
    """The HTTP settings in force: ``timeout`` (s per try), ``retries`` and ``seconds``, the
    longest one MLflow call waits for a server that does not answer."""
    from mlflow.environment_variables import (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
                                              MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
                                              MLFLOW_HTTP_REQUEST_MAX_RETRIES,
                                              MLFLOW_HTTP_REQUEST_TIMEOUT)

    timeout = MLFLOW_HTTP_REQUEST_TIMEOUT.get()
    retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    factor = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    jitter = MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get()
    # urllib3: no wait before the first retry, then factor * 2**(n-1) (+ jitter), at most 120 s
    backoff = sum(min(120.0, factor * 2 ** (n - 1) + jitter) for n in range(2, retries + 1))
    return {"timeout": timeout, "retries": retries, "seconds": (retries + 1) * timeout + backoff}


_UNREACHABLE = re.compile(r"Max retries exceeded|Connection refused|Failed to establish a new "
                          r"connection|timed out|RemoteDisconnected|Connection aborted")


def _unreachable(exc: BaseException) -> bool:
    """MLflow's REST client gave up on the server (no connection, timeouts, or retries spent
    on 429/5xx answers), as opposed to an answer such as "not found"."""
    import requests

    seen = exc
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout,
                             requests.exceptions.RetryError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return bool(_UNREACHABLE.search(str(exc)))


@contextlib.contextmanager
def service_guard(tracking_uri: str):
    """Turn MLflow's "gave up on the (http) tracking server" into ``ServiceUnavailable`` naming
    the server (credentials redacted) and the time budget; other errors pass unchanged."""
    start = time.monotonic()
    try:
        yield
    except MlflowException as exc:
        if not tracking_uri.startswith(("http://", "https://")) or not _unreachable(exc):
            raise
        b = http_budget()
        detail = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
        raise ServiceUnavailable(
            f"MLflow tracking server {redact(tracking_uri)} did not answer: gave up after "
            f"{time.monotonic() - start:.1f} s, within its budget of {b['seconds']:.1f} s per "
            f"call ({b['retries'] + 1} tries of up to {b['timeout']} s; "
            f"MLFLOW_HTTP_REQUEST_TIMEOUT={b['timeout']}, "
            f"MLFLOW_HTTP_REQUEST_MAX_RETRIES={b['retries']}). Retry when it is back. "
            f"({detail})") from exc


class _BoundedClient:
    """An ``MlflowClient`` (tracking and registry on one URI) whose calls raise
    ``ServiceUnavailable`` when the server does not answer within the HTTP budget."""

    def __init__(self, tracking_uri: str):
        bound_http_requests()
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def __getattr__(self, name):
        if name.startswith("__") or name == "_client":  # copy/pickle probes; not yet set up
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            with service_guard(self.tracking_uri):
                return attr(*args, **kwargs)

        return call


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """A client of ``tracking_uri`` (tracking and registry) with the outage handling above."""
    return _BoundedClient(tracking_uri)


def fail_stale_runs(tracking_uri: str, experiment_id: str, still_running: Callable[[Run], bool],
                    *, tags: dict[str, str] | None = None, by: str = "") -> list[str]:
    """Mark FAILED the experiment's RUNNING runs (with these ``tags``) whose process is gone.

    A run whose process failed while the server was down cannot be closed then; the next run
    start closes it. ``still_running(run)`` says whether a run's process may still be working.

    Returns:
        The ids of the runs marked FAILED.
    """
    client = mlflow_client(tracking_uri)
    where = ["attributes.status = 'RUNNING'"]
    where += [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
    stale = [r for r in client.search_runs([experiment_id], " and ".join(where), max_results=200)
             if not still_running(r)]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for run in stale:
        client.set_tag(run.info.run_id, "decflow.error",
                       f"left RUNNING by a process that ended without closing it (e.g. the "
                       f"tracking server was unreachable when it failed); marked FAILED at {now}"
                       f"{f' by run {by}' if by else ''}")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    return [r.info.run_id for r in stale]


# --------------------------------------------------------------------------- experiments
def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it (with ``artifact_location``) if missing.

    A deleted experiment of that name is restored. An existing experiment keeps its artifact
    location (MLflow cannot move it); a different one is only logged.
    """
    client = mlflow_client(tracking_uri)
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
    reported as a warning and does not stop training, except a server that does not answer
    (``ServiceUnavailable`` from a ``mlflow_client``): the run fails now rather than after
    training.
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
    requirements and a signature inferred from ``input_example`` and its predictions. Before
    upload, the sha256 of every file goes into ``decflow-manifest.json`` (uploaded with them)
    and the manifest's own sha256 into the LoggedModel tag ``decflow.manifest_sha256``, from
    the bytes written here (``register_model`` copies it to the version).

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


# ------------------------------------------------------------------------------ registry
def register_model(tracking_uri: str, model_uri: str, model_name: str, *, run_id: str,
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
    source, model_id, digest = model_uri, None, None
    if model_uri.startswith("models:/m-"):
        # The sqlite/SQL registry resolves a "models:/<model_id>" source through a client on
        # MLflow's global tracking URI (an MLflow TODO), so resolve it here with our own.
        model_id = model_uri.removeprefix("models:/").rstrip("/")
        logged = client.get_logged_model(model_id)
        source, digest = logged.artifact_location, logged.tags.get(MANIFEST_TAG)
    if digest is None:
        digest = _stored_manifest_digest(tracking_uri, source)
    version_tags = {DECISION_TAG: PENDING, **{k: str(v) for k, v in (tags or {}).items()},
                    MANIFEST_TAG: digest}
    mv = client.create_model_version(model_name, source=source, run_id=run_id,
                                     tags=version_tags, model_id=model_id)
    if model_id is not None:
        _link_version(client, model_id, model_name, mv.version)
    return client.get_model_version(model_name, mv.version)


def write_manifest(root: Path) -> str:
    """Write ``root/decflow-manifest.json``: ``{"algorithm": "sha256", "files": {path: hex}}``
    for every file under ``root`` (posix paths relative to it). Returns the manifest's sha256."""
    root = Path(root)
    files = {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*"))
             if p.is_file() and p.relative_to(root).as_posix() != MANIFEST}
    data = json.dumps({"algorithm": "sha256", "files": files}, indent=1,
                      sort_keys=True).encode()
    (root / MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def verify_model_dir(root: Path, manifest_sha256: str | None, what: str) -> None:
    """Check every file under ``root`` against the manifest whose sha256 was recorded at
    registration; nothing under ``root`` is read as a model before this passes.

    What MLflow and Python write into a model directory loaded in place (a local artifact
    store loaded with ``mlflow.pyfunc.load_model("models:/...")``), ``registered_model_meta``
    and ``__pycache__/``, is not part of the model: it is deleted from this copy first, so no
    stored bytecode can stand in for the checked sources.

    Args:
        root: a downloaded model directory (a copy: byproducts are deleted from it).
        manifest_sha256: the version's ``decflow.manifest_sha256`` tag.
        what: names the model in messages, e.g. ``model 'tiny' version 3``.

    Raises:
        ModelIntegrityError: no digest recorded; the manifest, or a file, differs from its
            digest; a file is missing or not in the manifest. The message names the file.
    """
    root = Path(root)
    for path in sorted(root.rglob("*"), reverse=True):
        rel = path.relative_to(root)
        if "__pycache__" not in rel.parts and rel.as_posix() != _MLFLOW_META:
            continue
        if path.is_dir() and not path.is_symlink():
            path.rmdir()  # its files came first (reverse order)
        else:
            path.unlink()
    if not manifest_sha256:
        raise ModelIntegrityError(
            f"{what} has no {MANIFEST_TAG} tag (registered without a content digest, before "
            f"decflow recorded them): refusing to load it; if its files are the ones you "
            f"registered, `decflow adopt --version <N>` records their digest now, else "
            f"register the model again with decflow")
    if not (root / MANIFEST).is_file():
        raise ModelIntegrityError(f"{what}: file {MANIFEST} recorded at registration is "
                                  f"missing from the artifact store: refusing to load it")
    got = _sha256(root / MANIFEST)
    if got != manifest_sha256:
        raise ModelIntegrityError(
            f"{what}: file {MANIFEST} has sha256 {got}, but the version's tag {MANIFEST_TAG} "
            f"says {manifest_sha256}: the model's files were changed after registration; "
            f"refusing to load them")
    expected = json.loads((root / MANIFEST).read_bytes())["files"]
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for rel, want in sorted(expected.items()):
        if rel not in present:
            raise ModelIntegrityError(f"{what}: file {rel} recorded at registration is missing "
                                      f"from the artifact store: refusing to load it")
        got = _sha256(root / rel)
        if got != want:
            raise ModelIntegrityError(
                f"{what}: file {rel} has sha256 {got}, but the manifest recorded at "
                f"registration says {want}: it was changed after registration; refusing to "
                f"load it")
    extra = sorted(present - set(expected) - {MANIFEST})
    if extra:
        raise ModelIntegrityError(f"{what}: file {extra[0]} is not in the manifest recorded at "
                                  f"registration (added later; {len(extra)} such file(s)): "
                                  f"refusing to load it")


_MLFLOW_META = "registered_model_meta"  # written by MLflow's models:/ downloads


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stored_manifest_digest(tracking_uri: str, source: str) -> str:
    """sha256 of the manifest stored with a model that has no LoggedModel digest tag."""
    with tempfile.TemporaryDirectory(prefix="decflow-manifest-") as tmp:
        try:
            with service_guard(tracking_uri):
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source.rstrip('/')}/{MANIFEST}", dst_path=tmp,
                    tracking_uri=tracking_uri)
        except (MlflowException, OSError) as exc:
            raise ValueError(f"{source} has no {MANIFEST} ({exc}): log the model with "
                             f"decflow.registry.tracking.log_model, which records its file digests"
                             ) from exc
        return _sha256(Path(path))


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


def require_version(tracking_uri: str, model_name: str, ref: str) -> ModelVersion:
    """``get_version``, or ``ConfigError`` naming the model, the reference and the store: the
    one check of every command that is given a model reference (CLI exit code 2)."""
    mv = get_version(tracking_uri, model_name, ref)
    if mv is None:
        hint = ""
        if str(ref) == CHALLENGER:
            hint = ("; `challenger` is set when a gate judges a version and cleared by a "
                    "rollback of that version: name the version to gate")
        raise ConfigError(f"model {model_name!r} has no version or alias {str(ref)!r} in "
                          f"{redact(tracking_uri)}{hint}")
    return mv


def model_version_uri(model_name: str, ref: str) -> str:
    """``models:/<name>/<version>`` for a version number, ``models:/<name>@<alias>`` otherwise."""
    ref = str(ref)
    return f"models:/{model_name}/{ref}" if ref.isdigit() else f"models:/{model_name}@{ref}"


def load_scorer(tracking_uri: str, model_name: str, ref: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a registered version (alias or version number) as a pyfunc scorer on CPU.

    Same model as ``mlflow.pyfunc.load_model(model_version_uri(model_name, ref))``, without
    needing MLflow's process-wide tracking/registry URI to point at ``tracking_uri``, and with
    every file checked against the digests recorded at registration first. Loading a pyfunc
    executes code stored with the model (``pyfunc_model.py``, the bundled decflow package);
    ``load_model_safely`` executes none.

    Raises:
        ValueError: ``ref`` does not name a version of ``model_name``.
        ModelIntegrityError: a file differs from its recorded digest (nothing was executed).
    """
    local = tempfile.mkdtemp(prefix="decflow-scorer-")  # the pyfunc may import from it later
    return mlflow.pyfunc.load_model(str(_download_verified(tracking_uri, model_name, ref, local)))


class LoadedModel(NamedTuple):
    """A registered version's fitted parts (unpacks as ``encoder, estimator``)."""

    encoder: FeatureEncoder
    estimator: DeepEmbeddedClustering

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """``cluster_id``, ``confidence``, ``distance`` of the rows of ``df`` (the source
        feature columns), as the logged pyfunc gives them."""
        return score_frame(self.encoder, self.estimator, as_model_input(self.encoder, df))


def load_components(tracking_uri: str, model_name: str, ref: str, device: str = "cpu"
                    ) -> LoadedModel:
    """The fitted ``(FeatureEncoder, DeepEmbeddedClustering)`` of a registered version.

    Reads only the JSON encoder and the safetensors weights, with the installed decflow code,
    after checking every file of the version against the digests recorded at registration.
    For ``score_frame`` on many partitions (both objects reload from their files on workers)
    and for warm starts; gives the same predictions as ``load_scorer``.

    Raises:
        ValueError: ``ref`` does not name a version of ``model_name``.
        ModelIntegrityError: a file differs from its recorded digest.
    """
    with tempfile.TemporaryDirectory(prefix="decflow-load-") as tmp:
        local = _download_verified(tracking_uri, model_name, ref, tmp) / "artifacts"
        return LoadedModel(FeatureEncoder.load(local / "encoder.json"),
                           DeepEmbeddedClustering.load(local / "estimator.safetensors",
                                                       device=device))


def load_model_safely(tracking_uri: str, model_name: str, ref: str, device: str = "cpu"
                      ) -> LoadedModel:
    """A registered version as an object with ``.predict(df)``, running no code stored with it.

    The replacement for ``mlflow.pyfunc.load_model`` where the artifact store is less trusted
    than this environment: the files are checked against the digests recorded at registration,
    then only the JSON encoder and the safetensors weights are read, by the installed decflow.
    ``predict`` gives what the pyfunc's ``predict`` gives.

    Raises:
        ValueError: ``ref`` does not name a version of ``model_name``.
        ModelIntegrityError: a file differs from its recorded digest.
    """
    return load_components(tracking_uri, model_name, ref, device=device)


ADOPTED_TAG = "decflow.manifest_adopted_at"


def adopt_version(tracking_uri: str, model_name: str, ref: str) -> dict[str, str]:
    """Record a content digest for a version registered before decflow recorded them (its
    loads are refused until then): the files as they are *now* are trusted from here on.

    Writes ``decflow-manifest.json`` beside the version's files in the artifact store, tags the
    version with its sha256 (``decflow.manifest_sha256``) and the time
    (``decflow.manifest_adopted_at``), then loads the version the safe way to check it.

    Returns:
        ``{"version", "manifest_sha256", "files"}`` (files: how many the manifest covers).

    Raises:
        ConfigError: ``ref`` names no version, or the version already has a digest.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    mv = require_version(tracking_uri, model_name, ref)
    if mv.tags.get(MANIFEST_TAG):
        raise ConfigError(f"model {model_name!r} version {mv.version} already has a content "
                          f"digest ({MANIFEST_TAG}); nothing to adopt")
    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="decflow-adopt-") as tmp:
        local = _download(tracking_uri, model_name, mv, tmp)
        (local / MANIFEST).unlink(missing_ok=True)  # an unrecorded manifest proves nothing
        digest = write_manifest(local)
        files = len(json.loads((local / MANIFEST).read_text())["files"])
        with service_guard(tracking_uri):
            get_artifact_repository(mv.source).log_artifact(str(local / MANIFEST))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    client.set_model_version_tag(model_name, mv.version, MANIFEST_TAG, digest)
    client.set_model_version_tag(model_name, mv.version, ADOPTED_TAG, now)
    load_model_safely(tracking_uri, model_name, str(mv.version))
    return {"version": str(mv.version), "manifest_sha256": digest, "files": str(files)}


def _download_verified(tracking_uri: str, model_name: str, ref: str, dst_path: str) -> Path:
    """Download a registered version's model directory into ``dst_path`` and check it against
    its recorded digests (``verify_model_dir``); returns the local directory.

    Resolves the version through our own client: MLflow's ``models:/`` artifact repository
    looks the alias up in the process-wide registry URI and ignores the one it is given.
    """
    mv = require_version(tracking_uri, model_name, ref)
    local = _download(tracking_uri, model_name, mv, dst_path)
    verify_model_dir(local, mv.tags.get(MANIFEST_TAG),
                     f"model {model_name!r} version {mv.version}")
    return local


def _download(tracking_uri: str, model_name: str, mv: ModelVersion, dst_path: str) -> Path:
    """A registered version's model directory, downloaded (unchecked) into ``dst_path``."""
    uri = _client(tracking_uri).get_model_version_download_uri(model_name, mv.version)
    with service_guard(tracking_uri):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path,
                                                        tracking_uri=tracking_uri))


def _client(tracking_uri: str) -> MlflowClient:
    return mlflow_client(tracking_uri)
