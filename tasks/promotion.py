"""Promotion gate, alias moves, rollback and stable cluster ids.

Tasks that call MLflow have no Prefect retries (see ``tasks/registry.py``).
"""

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from decflow.config import PipelineConfig
from decflow.data import partitioned, sources
from decflow.errors import Conflict, Rejected
from decflow.model import alignment
from decflow.model.scoring import score_frame
from decflow.registry import aliases as registry
from decflow.registry import promotion
from decflow.registry import versions
from decflow.registry.names import Artifact, Tag

from .runtime import redact_errors, registry_lock
from .tracking import client, log_dict, log_metrics


@task(name="find_version", cache_policy=NO_CACHE)
@redact_errors
def find_version(config: PipelineConfig, ref: str):
    """The ModelVersion behind an alias or version number; ConfigError when there is none."""
    return versions.require_version(config.tracking_uri(), config.registry.model_name, ref)


@task(name="sample_reference_rows", cache_policy=NO_CACHE)
@redact_errors
def sample_reference_rows(frame: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """At most promotion.reference_rows rows of the run's window, for both models."""
    return promotion.reference_sample(frame, config.promotion.reference_rows,
                                      config.train.random_state or 0)


@task(name="load_reference_rows", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
@redact_errors
def load_reference_rows(config: PipelineConfig, version, run_date: dt.date | None = None
                        ) -> pd.DataFrame:
    """A sample of run_date's partition, or by default of the window the candidate trained on."""
    if run_date is None:
        trained = version.tags.get(Tag.DATA_RUN_DATE)
        if not trained:
            raise ValueError(f"version {version.version} has no data.run_date tag: give the "
                             f"date whose partition to compare on")
        scan = sources.scan_window(config.source, partitioned.parse_date(trained))
    else:
        scan = sources.scan_window(config.source, run_date, 1)
    if scan.n_rows == 0:
        day = run_date or version.tags.get(Tag.DATA_RUN_DATE)
        raise ValueError(f"no source rows to compare on for {day} in {config.source.uri}")
    return sources.sample_window(scan, config.promotion.reference_rows,
                                 config.source_columns(),
                                 config.train.random_state or 0)


@task(name="compare_models", cache_policy=NO_CACHE)
@redact_errors
def compare_models(config: PipelineConfig, candidate, challenger, champion_version, champion,
                   reference: pd.DataFrame) -> promotion.PromotionDecision:
    """Score the reference rows with both models and evaluate every gate (nothing moves).

    A candidate that was rolled back is judged like any other (it was named explicitly: a
    rollback clears `challenger`), with a note in the decision and a warning in the run log.
    """
    success = candidate.tags.get(Tag.VALIDATION_SUCCESS)
    decision = promotion.compare_models(
        challenger, champion, reference, config.promotion,
        label_column=config.source.label_column,
        validation_success=None if success is None else success == "True",
        candidate_version=str(candidate.version),
        champion_version=None if champion_version is None else str(champion_version.version),
        random_state=config.train.random_state or 0)
    rolled_back = candidate.tags.get(Tag.PROMOTION_ROLLED_BACK_AT)
    if rolled_back:
        note = (f"version {candidate.version} was rolled back at {rolled_back}; it is judged "
                f"again only because it was named explicitly")
        get_run_logger().warning(note)
        decision = dataclasses.replace(decision, notes=[*decision.notes, note])
    return decision


@task(name="record_decision", cache_policy=NO_CACHE)
@redact_errors
def record_decision(config: PipelineConfig, decision: promotion.PromotionDecision,
                    run_id: str | None = None) -> None:
    """The decision and each gate as tags on the candidate version, as
    ``promotion/decision.json`` in the candidate's MLflow run (``run_id``; the latest verdict
    on it, for its run report), and a Prefect artifact."""
    registry.set_version_tags(config.tracking_uri(), config.registry.model_name,
                              decision.candidate, decision.to_tags(),
                              replace_prefix=promotion.GATE_TAG_PREFIX)
    if run_id:
        log_dict(config, run_id, decision.to_dict(), Artifact.PROMOTION)
    create_markdown_artifact(key="promotion-decision", markdown=decision.to_markdown(),
                             description=f"{config.registry.model_name}: {decision.summary()}")


@task(name="apply_decision", cache_policy=NO_CACHE)
@redact_errors
def apply_decision(config: PipelineConfig, decision: promotion.PromotionDecision
                   ) -> dict[str, str]:
    """Move the aliases after a verdict (``registry.apply_verdict``): challenger <- the judged
    version if newest, and champion/previous on "promote"; returns the aliases after.

    Under the registry lock: the check that the champion is still the one the gates compared
    against and the moves are one step, so a manual promote racing the nightly gate ends as one
    of them alone would; the other is refused (``Conflict``, nothing moved, and the version is
    tagged ``promotion.decision`` = ``conflict``).
    """
    uri, name = config.tracking_uri(), config.registry.model_name
    try:
        with registry_lock(config):
            return registry.apply_verdict(uri, name, decision.candidate,
                                          promote=decision.promote,
                                          expected_champion=decision.champion)
    except Conflict as exc:  # the recorded verdict did not take effect: say so on the version
        registry.set_version_tags(uri, name, decision.candidate,
                                  {Tag.PROMOTION_DECISION: "conflict",
                                   Tag.PROMOTION_CONFLICT: str(exc)[:4000]})
        raise


def require_champion(config: PipelineConfig, decision: promotion.PromotionDecision) -> None:
    """After the gate of a model's first version: labels need a champion, so a rejected first
    version fails the run (``Rejected`` naming the failed gates; exit code 1); nothing was
    written."""
    if decision.champion is None and not decision.promote:
        raise Rejected(f"no champion to label with: {decision.summary()}; the first version "
                           f"of {config.registry.model_name!r} must pass the gates before it "
                           f"serves (nothing was written)")


@task(name="rollback_champion", cache_policy=NO_CACHE)
@redact_errors
def rollback_champion(config: PipelineConfig) -> dict[str, str]:
    """champion <- previous, previous <- the demoted champion, challenger cleared if it was
    the demoted one (so a plain promote cannot put it back); tags both versions."""
    uri, name = config.tracking_uri(), config.registry.model_name
    with registry_lock(config):
        moved = registry.rollback_champion(uri, name)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    registry.set_version_tags(uri, name, moved["demoted"], {Tag.PROMOTION_ROLLED_BACK_AT: now})
    registry.set_version_tags(uri, name, moved["restored"], {Tag.PROMOTION_RESTORED_AT: now})
    create_markdown_artifact(
        key="promotion-rollback", description=f"{name}: rollback",
        markdown=f"### Rollback of {name}\n\nchampion: version {moved['restored']} (restored)"
                 f"\n\nprevious: version {moved['demoted']} (demoted), at {now}\n")
    return moved


@task(name="align_cluster_ids", cache_policy=NO_CACHE)
@redact_errors
def align_cluster_ids(est, X: np.ndarray, frame: pd.DataFrame, champion_version, champion,
                      config: PipelineConfig, run_id: str) -> dict | None:
    """Renumber the new model's clusters after the champion's labels of the training rows.

    Returns:
        The alignment summary (mapping, kept ids, label churn before/after, reference
        version), or None when there is no champion or it cannot score these rows.
    """
    if champion is None:
        client(config).set_tag(run_id, Tag.ALIGNMENT_REFERENCE_VERSION, "none")
        return None
    missing = promotion.missing_columns(champion.encoder, frame)
    if missing:
        client(config).set_tag(run_id, Tag.ALIGNMENT_SKIPPED,
                               f"champion needs columns the rows lack: {missing}")
        return None
    reference = score_frame(champion.encoder, champion.estimator, frame)["cluster_id"]
    result = alignment.align_clusters(est, X, reference.to_numpy(),
                                      champion.estimator.n_clusters)
    summary = {"reference_version": str(champion_version.version), **result.to_dict()}
    log_metrics(config, run_id, {"label_churn": result.label_churn,
                                 "label_churn_unaligned": result.label_churn_unaligned})
    log_dict(config, run_id, summary, Artifact.ALIGNMENT)
    client(config).set_tag(run_id, Tag.ALIGNMENT_REFERENCE_VERSION, summary["reference_version"])
    return summary
