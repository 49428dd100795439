"""Model logging, registration and champion lookup.

No Prefect retries here: MLflow's own HTTP retries are bounded
(``decflow.registry.client.HTTP_BUDGET``) and a server that does not answer fails the run with
``ServiceUnavailable`` within that budget; retrying the task would multiply the wait (and a
retried registration could register twice).
"""


import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from decflow.config import PipelineConfig
from decflow.data.sources import Lineage
from decflow.data.validation import ValidationResult
from decflow.model.features import FeatureEncoder
from decflow.registry import packaging
from decflow.registry import versions

from .runtime import redact_errors


@task(name="load_model", cache_policy=NO_CACHE)
@redact_errors
def load_model(config: PipelineConfig, ref: str = versions.CHAMPION, required: bool = False,
               as_files: bool = False):
    """(ModelVersion, LoadedModel(encoder, estimator)) behind an alias or version number, or
    (None, None) when there is none (``ConfigError`` when ``required``); its files are checked
    against their recorded digests. ``as_files``: ``ModelFiles`` (their bytes) instead, for a
    run that only ships the model to its workers (no torch in the flow's process)."""
    uri, name = config.tracking_uri(), config.registry.model_name
    if required:
        version = versions.require_version(uri, name, ref)
    else:
        version = versions.get_version(uri, name, ref)
    if version is None:
        return None, None
    load = versions.load_files if as_files else versions.load_components
    return version, load(uri, name, str(version.version))


@task(name="champion_weights", cache_policy=NO_CACHE)
@redact_errors
def champion_weights(champion, encoder: FeatureEncoder, config: PipelineConfig) -> dict | None:
    """Autoencoder weights of the champion when its feature schema and architecture match."""
    if champion is None or not config.train.warm_start:
        return None
    from decflow.model.building import compatible_weights  # torch: not for scoring-only runs

    return compatible_weights(champion.encoder, champion.estimator, encoder,
                              config.model.hidden, config.model.n_components)


@task(name="register_model", cache_policy=NO_CACHE)
@redact_errors
def register_model(est, encoder: FeatureEncoder, frame: pd.DataFrame, lineage: Lineage,
                   validation: ValidationResult, metrics: dict[str, float],
                   config: PipelineConfig, run_id: str, run_date: str,
                   alignment: dict | None = None, profile: dict | None = None) -> str:
    """Log the pyfunc model (with its file digests) and register it as a new version, tagged
    ``promotion.decision=pending`` and holding no alias until a promotion gate judges it;
    its other tags are ``packaging.version_tags`` (lineage, validation, metrics, and from
    ``align_cluster_ids`` / ``profile_clusters`` the alignment and the profiles' pointer).

    Returns:
        The new version number (as text).
    """
    uri = config.tracking_uri()
    example = frame[encoder.features.columns()].head(5)
    model_uri = packaging.log_model(run_id, uri, est, encoder, example)
    tags = packaging.version_tags(lineage, run_date, config.digest(), validation, metrics,
                                  alignment, profile)
    version = packaging.register_version(uri, model_uri, config.registry.model_name,
                                         run_id=run_id, tags=tags)
    return str(version.version)
