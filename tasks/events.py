"""Prefect events for what a person may need to hear about: a night's outcome, a promotion
decision, a drift alert. Automations on the Prefect server (``decflow deploy --notify``) turn
them into messages; without any, they are entries in the server's event feed.

Every event is about the registered model (resource ``decflow.model.<name>``); Prefect adds the
flow run, flow, deployment and tags it happened in as related resources. Its payload carries a
ready-to-send ``subject`` and ``text`` (secrets redacted), so a message template is
``{{ event.payload.subject }}`` / ``{{ event.payload.text }}``, plus the fields they were made of.

=============================  =================================================================
``decflow.night.completed``    a nightly run finished: versions, promotion, drift alert, links
``decflow.night.failed``       a nightly run failed: ``exit_code`` and ``failure_class`` (data,
                               config, service, conflict, internal), error type and message
``decflow.promotion.<verdict>``  a gate's verdict (promote, reject, already_champion)
``decflow.drift.alert``        tonight's churn or cluster-size shift passed its threshold
=============================  =================================================================

Emitting never fails a run: an event that cannot be sent is logged and dropped.
"""

import contextlib
import logging
from typing import Any

from decflow.config import PipelineConfig
from decflow.errors import failure_class
from decflow.redaction import redact

NIGHT_COMPLETED = "decflow.night.completed"
NIGHT_FAILED = "decflow.night.failed"
PROMOTION = "decflow.promotion"  # + "." + the verdict
DRIFT_ALERT = "decflow.drift.alert"
MESSAGE_LIMIT = 1500  # characters of an error message in an event (chat messages stay short)

_log = logging.getLogger("decflow.events")


def model_resource(config: PipelineConfig) -> dict[str, str]:
    """The resource every decflow event is about: the registered model."""
    name = config.registry.model_name
    return {"prefect.resource.id": f"decflow.model.{name}", "prefect.resource.name": name,
            "decflow.experiment": config.registry.experiment}


def emit(config: PipelineConfig, event: str, subject: str, text: str, **fields: Any) -> None:
    """Send ``event`` about the model with ``subject``, ``text`` and ``fields`` as its payload
    (all redacted); a failure to send is logged, never raised."""
    from prefect.events import emit_event

    payload = {"subject": redact(subject), "text": redact(text),
               **{k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}}
    try:
        emit_event(event=event, resource=model_resource(config), payload=payload)
    except Exception as exc:  # noqa: BLE001 - telling is never the reason a run fails
        _log.warning("could not emit the Prefect event %s: %s", event, redact(str(exc))[:300])


def flow_run_link() -> str | None:
    """The Prefect UI page of the flow run this process is in (None outside one)."""
    from prefect.runtime import flow_run

    return flow_run.ui_url if flow_run.id is not None else None


class NightOutcome:
    """What a nightly run fills in as it goes, for the event of its outcome."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.links: dict[str, str] = {}
        self.summary: list[str] = []
        self.fields: dict[str, Any] = {}
        self.drift_alerts: list[str] = []

    def night(self, links: dict[str, str], report: dict, version: str, champion: str,
              decision, written: dict, drift: dict) -> None:
        """What a finished night tells: the versions, the verdict, the labels, the drift."""
        self.links.update(links, report=report["link"])
        verdict = f" ({decision.summary()})" if decision is not None else ""
        self.summary += [f"model version {version} registered; champion is version "
                         f"{champion}{verdict}",
                         f"{written['rows']} labels written to {written['path']}"]
        if drift.get("alert"):
            self.drift_alerts = list(drift.get("alerts") or ["drift alert"])
            self.summary.append("drift alert: " + "; ".join(self.drift_alerts))
        self.fields.update(model_version=version, champion_version=champion,
                           promotion=decision.decision if decision is not None else None,
                           drift_alert=bool(self.drift_alerts), rows=written["rows"])


@contextlib.contextmanager
def announced_night(config: PipelineConfig, run_name: str, day: str):
    """Brackets a nightly run: on success emits ``decflow.night.completed``, on an exception
    ``decflow.night.failed`` with its exit-code class (then re-raises). Yields a
    ``NightOutcome`` the run fills in (MLflow run, report link, summary lines)."""
    outcome = NightOutcome()
    model = config.registry.model_name
    try:
        yield outcome
    except Exception as exc:
        code, kind = failure_class(exc)
        message = redact(str(exc))
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + "..."
        links = {**outcome.links, "prefect_run": flow_run_link()}
        emit(config, NIGHT_FAILED,
             subject=f"decflow: {run_name} of model {model} FAILED ({kind}, exit code {code})",
             text="\n".join([f"{run_name} failed: {kind} error, exit code {code}",
                             f"{type(exc).__name__}: {message}",
                             *_link_lines(links), _what_to_do(kind)]),
             run_name=run_name, run_date=day, model=model, exit_code=code, failure_class=kind,
             error_type=type(exc).__name__, message=message, mlflow_run_id=outcome.run_id,
             links=links)
        raise
    links = {**outcome.links, "prefect_run": flow_run_link()}
    if outcome.drift_alerts:
        announce_drift(config, run_name, day, outcome.drift_alerts, links)
    emit(config, NIGHT_COMPLETED, subject=f"decflow: {run_name} of model {model} completed",
         text="\n".join([f"{run_name} completed", *outcome.summary, *_link_lines(links)]),
         run_name=run_name, run_date=day, model=model, mlflow_run_id=outcome.run_id,
         links=links, **outcome.fields)


def announce_promotion(config: PipelineConfig, decision) -> None:
    """``decflow.promotion.<verdict>`` for a gate's ``PromotionDecision``."""
    model = config.registry.model_name
    emit(config, f"{PROMOTION}.{decision.decision}",
         subject=f"decflow: model {model}: {decision.summary()}", text=decision.summary(),
         model=model, decision=decision.decision, candidate=decision.candidate,
         champion=decision.champion, failed_gates=[g.name for g in decision.failed],
         links={"prefect_run": flow_run_link()})


def announce_drift(config: PipelineConfig, run_name: str, day: str, alerts: list[str],
                   links: dict[str, str]) -> None:
    """``decflow.drift.alert``: the night's labels were written, but drifted past a
    threshold (``monitoring.max_churn`` / ``max_size_shift``)."""
    model = config.registry.model_name
    links = {**links, "prefect_run": flow_run_link()}
    emit(config, DRIFT_ALERT,
         subject=f"decflow: drift alert on {run_name} of model {model}",
         text="\n".join([f"{run_name}: drift past its threshold (the labels were written)",
                         *alerts, *_link_lines(links)]),
         run_name=run_name, run_date=day, model=model, alerts=list(alerts), links=links)


_LINK_NAMES = {"report": "run report", "mlflow_run": "MLflow run", "prefect_run": "Prefect run",
               "model_version": "model version"}


def _link_lines(links: dict[str, str | None]) -> list[str]:
    return [f"{_LINK_NAMES.get(k, k)}: {v}" for k, v in links.items() if v]


def _what_to_do(kind: str) -> str:
    return {"data": "Fix the data (the message names the partition and column), then rerun the "
                    "night: decflow run --run-date <night>.",
            "config": "Fix the config or the command line, then rerun the night.",
            "service": "A server did not answer: nothing was written; rerun when it is back.",
            "conflict": "Another run held the night or the registry: nothing was written; "
                        "rerun when it is done.",
            }.get(kind, "An internal error (a bug): the Prefect run's logs have the "
                        "traceback.")
