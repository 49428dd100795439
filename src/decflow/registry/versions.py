"""Registered versions: finding one by alias or number (one check and one message for a
reference that does not exist), loading it (checked against its digests first), and adopting a
version registered before decflow recorded digests.

Aliases, no stages: ``champion`` serves labels, ``challenger`` is the newest judged candidate,
``previous`` the last champion (for rollback); ``decflow.registry.aliases`` moves them.

Loading: ``load_components`` and ``load_model_safely`` read only the JSON encoder and the
safetensors weights with the installed decflow code; ``load_scorer`` (like
``mlflow.pyfunc.load_model``) executes ``pyfunc_model.py`` and the decflow package stored with
the model, so write access to the artifact store means code execution for whoever loads it that
way. Every loader first checks each file against the manifest recorded at registration
(``decflow.registry.integrity``).
"""

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from decflow.redaction import redact
from decflow.errors import ConfigError
from decflow.model.features import FeatureEncoder
from decflow.model.scoring import as_model_input, score_frame
from decflow.registry.client import mlflow_client, service_guard
from decflow.registry.integrity import (ADOPTED_TAG, MANIFEST, MANIFEST_TAG, verify_model_dir,
                                        write_manifest)
from decflow.registry.names import Artifact, Tag

if TYPE_CHECKING:  # torch loads with the estimator, not with the registry (see load_files)
    from decflow.model.estimator import DeepEmbeddedClustering

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
# A version's verdict (set by the promotion gate); "pending" from registration until judged.
DECISION_TAG, PENDING = Tag.PROMOTION_DECISION, "pending"


def get_version(tracking_uri: str, model_name: str, ref: str) -> ModelVersion | None:
    """The version that ``ref`` (an alias such as "champion", or a version number) points at.

    Returns None when the registered model, alias or version does not exist.
    """
    client = mlflow_client(tracking_uri)
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

    The version is copied into a temporary folder that the pyfunc imports from while it is in
    use; the folder is removed when the scorer is garbage-collected or the process exits, and
    at once when loading fails.

    Raises:
        ValueError: ``ref`` does not name a version of ``model_name``.
        ModelIntegrityError: a file differs from its recorded digest (nothing was executed).
    """
    local = tempfile.mkdtemp(prefix="decflow-scorer-")
    try:
        scorer = mlflow.pyfunc.load_model(
            str(download_verified(tracking_uri, model_name, ref, local)))
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    weakref.finalize(scorer, _drop_copy, local)
    return scorer


def _drop_copy(local: str) -> None:
    """Remove a scorer's copy and the ``sys.path`` entries MLflow added for its code."""
    sys.path[:] = [p for p in sys.path if not (p == local or p.startswith(local + os.sep))]
    shutil.rmtree(local, ignore_errors=True)


class LoadedModel(NamedTuple):
    """A registered version's fitted parts (unpacks as ``encoder, estimator``)."""

    encoder: FeatureEncoder
    estimator: "DeepEmbeddedClustering"

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
    from decflow.model.estimator import DeepEmbeddedClustering

    with tempfile.TemporaryDirectory(prefix="decflow-load-") as tmp:
        local = download_verified(tracking_uri, model_name, ref, tmp)
        return LoadedModel(FeatureEncoder.load(local / Artifact.MODEL_ENCODER),
                           DeepEmbeddedClustering.load(local / Artifact.MODEL_ESTIMATOR,
                                                       device=device))


class ModelFiles(NamedTuple):
    """A registered version's fitted parts as the bytes of their files (unpacks as
    ``encoder, estimator``): what workers rebuild the model from (``engine.payload``)."""

    encoder: bytes  # Artifact.MODEL_ENCODER: FeatureEncoder.save JSON
    estimator: bytes  # Artifact.MODEL_ESTIMATOR: DeepEmbeddedClustering.save safetensors


def load_files(tracking_uri: str, model_name: str, ref: str) -> ModelFiles:
    """The files of ``load_components``, checked against their digests the same way, as bytes.

    For a process that only ships the model to Dask workers (``decflow score``, backfill): it
    neither imports torch and scikit-learn nor rebuilds the estimator (about 3 s of CPU of
    every such command on two cores, beside its workers' own start).

    Raises:
        ValueError: ``ref`` does not name a version of ``model_name``.
        ModelIntegrityError: a file differs from its recorded digest.
    """
    with tempfile.TemporaryDirectory(prefix="decflow-load-") as tmp:
        local = download_verified(tracking_uri, model_name, ref, tmp)
        return ModelFiles((local / Artifact.MODEL_ENCODER).read_bytes(),
                          (local / Artifact.MODEL_ESTIMATOR).read_bytes())


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
    client = mlflow_client(tracking_uri)
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


def download_verified(tracking_uri: str, model_name: str, ref: str, dst_path: str) -> Path:
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
    uri = mlflow_client(tracking_uri).get_model_version_download_uri(model_name, mv.version)
    with service_guard(tracking_uri):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path,
                                                        tracking_uri=tracking_uri))
