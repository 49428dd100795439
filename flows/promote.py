"""Champion/challenger promotion and rollback: a table of contents over tasks/promotion.py."""

import datetime as dt

import pandas as pd
from prefect import flow

from decflow.config import PipelineConfig
from decflow.registry.promotion import PromotionDecision
from decflow.registry.versions import CHAMPION
from decflow.tasks.events import announce_promotion
from decflow.tasks.promotion import (apply_decision, compare_models, find_version,
                                     load_reference_rows, record_decision, require_champion,
                                     rollback_champion)
from decflow.tasks.runtime import prepare_run, redact_errors
from decflow.tasks.registry import load_model


def gate_candidate(config: PipelineConfig, candidate: str, reference: pd.DataFrame,
                   need_champion: bool = False) -> PromotionDecision:
    """Evaluate every gate on the reference rows, record the decision, then move aliases
    (challenger <- the judged version if newest; champion/previous on "promote").

    Shared by `promote` and the nightly `recluster`; call it inside a flow. With
    ``need_champion`` (the caller labels next) a rejected first version fails the run.
    """
    version, challenger = load_model(config, candidate)
    champion_version, champion = load_model(config, CHAMPION)
    decision = compare_models(config, version, challenger, champion_version, champion,
                              reference)
    record_decision(config, decision, version.run_id)
    apply_decision(config, decision)
    announce_promotion(config, decision)
    if need_champion:
        require_champion(config, decision)
    return decision


@flow(name="promote", flow_run_name="promote-{candidate}")
@redact_errors
def promote(config: PipelineConfig, candidate: str = "challenger",
            run_date: dt.date | None = None) -> dict:
    """Gate a candidate (alias or version) against the champion; promote it if every gate passes.

    The reference rows are run_date's partition, or by default the candidate's training window.
    The default `challenger` is the newest judged version; a rollback clears it when it was the
    demoted one, and a rolled-back version named explicitly is gated with a note.
    """
    config = prepare_run(config)
    version = find_version(config, candidate)
    reference = load_reference_rows(config, version, run_date)
    decision = gate_candidate(config, str(version.version), reference)
    return decision.to_dict()


@flow(name="rollback", flow_run_name="rollback")
@redact_errors
def rollback(config: PipelineConfig) -> dict:
    """The previous champion serves again; the demoted one becomes `previous`."""
    config = prepare_run(config)
    return rollback_champion(config)
