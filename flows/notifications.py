"""What `decflow deploy` sets up on the Prefect server so that a person hears about a night:
notification automations (``--notify``) and the automation that marks a dead run CRASHED.

Automations (names start with ``decflow/<model>:``; a redeploy updates them in place):

- ``failed night``: each ``decflow.night.failed`` event of the model (``tasks/events.py``)
  sends the event's subject and text (run, failure class and exit code, message, links) to
  every ``--notify`` target;
- ``drift alert``: the same for ``decflow.drift.alert``;
- ``crashed run``: a ``prefect.flow-run.Crashed`` event of one of the three deployments (a
  process that died: killed, out of memory, machine lost) sends the run's name, the state
  message and its link;
- ``unresponsive runs`` (always, with or without ``--notify``): a deployed run of the three
  that sent no heartbeat for ``crash_after_s`` seconds is set CRASHED. Deployed runs send one
  every ``HEARTBEAT_S`` seconds (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` in the deployments' job
  variables), so a run marked CRASHED missed several in a row.

Why Prefect's heartbeats and a server-side automation rather than a check at decflow's next
run: the next run may be a day away, and the run that died is the one a person needs to hear
about now; the server sees the silence within ``crash_after_s`` whatever the worker's host
does. Runs without a server (the embedded, ephemeral Prefect) have no one to watch them: their
MLflow run is closed by the next run (``fail_stale_runs``), as before.

A ``--notify`` target is a webhook URL (http or https) or a Prefect notification block,
``block:<type slug>/<name>`` (e.g. ``block:slack-webhook/ops``, made in the Prefect UI). A URL
becomes a ``custom-webhook`` block whose URL is kept as a secret value (the UI and API show it
masked) and which POSTs JSON ``{"text": ..., "subject": ..., "body": ...}`` (``text`` is what
Slack and Mattermost incoming webhooks show).
"""

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from decflow.redaction import redact

HEARTBEAT_S = 30  # Prefect's minimum heartbeat interval
CRASH_AFTER_S = 120  # four missed heartbeats
BLOCK_PREFIX = "block:"
WEBHOOK_BLOCK_TYPE = "custom-webhook"


class BadTarget(ValueError):
    """A ``--notify`` value that is neither a webhook URL nor a usable notification block."""


@dataclass(frozen=True)
class Target:
    """A notification destination: the block that sends, and how to show it (no secret)."""
    block_document_id: object
    label: str


def heartbeat_env() -> dict[str, str]:
    """The job variables' environment of a deployed run: heartbeats on."""
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}


def show_target(target: str) -> str:
    """A ``--notify`` value as it may be printed: a block reference as given, a URL as its
    scheme and host only (a webhook's path or query is its secret)."""
    from urllib.parse import urlsplit

    if target.startswith(BLOCK_PREFIX):
        return target
    parts = urlsplit(target)
    return redact(f"{parts.scheme}://{parts.hostname or ''}" + (
        f":{parts.port}" if parts.port else "") + "/...")


def check_target(target: str) -> None:
    """Raise ``BadTarget`` naming the problem unless ``target`` is a URL or a block ref."""
    from urllib.parse import urlsplit

    if target.startswith(BLOCK_PREFIX):
        slug, _, name = target[len(BLOCK_PREFIX):].partition("/")
        if not slug or not name:
            raise BadTarget(f"{target!r}: a block reference is "
                             "block:<block type slug>/<block name>, e.g. "
                             "block:slack-webhook/ops")
        return
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadTarget(f"{show_target(target)!r}: expected a webhook URL "
                         "(http:// or https://) or block:<block type slug>/<block name>")


def resolve_target(client, target: str) -> Target:
    """The notification block for a ``--notify`` value: the named block (which must be able
    to notify), or a ``custom-webhook`` block made (or updated) for the URL."""
    from prefect.exceptions import ObjectNotFound

    check_target(target)
    if target.startswith(BLOCK_PREFIX):
        slug, _, name = target[len(BLOCK_PREFIX):].partition("/")
        try:
            document = client.read_block_document_by_name(name, block_type_slug=slug)
        except ObjectNotFound:
            raise BadTarget(f"{target}: no block {name!r} of type {slug!r} on the "
                             "Prefect server (make it in the UI: Blocks, +)") from None
        capabilities = document.block_schema.capabilities if document.block_schema else []
        if "notify" not in capabilities:
            raise BadTarget(f"{target}: a {slug!r} block cannot send notifications "
                             f"(its capabilities: {', '.join(capabilities) or 'none'})")
        return Target(document.id, target)
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    name = "decflow-notify-" + hashlib.sha256(target.encode()).hexdigest()[:12]
    block = CustomWebhookNotificationBlock(
        name="decflow", url="{{url}}", secrets={"url": target},
        json_data={"text": "{{subject}}\n{{body}}", "subject": "{{subject}}",
                   "body": "{{body}}"})
    block_id = block.save(name, overwrite=True)
    return Target(block_id, f"{show_target(target)} (block {WEBHOOK_BLOCK_TYPE}/{name})")


def automation_name(model: str, what: str) -> str:
    return f"decflow/{model}: {what}"


def _upsert(client, automation) -> str:
    """Create ``automation``, or update the one of the same name (the first; extra copies
    of the name are deleted)."""
    existing = client.read_automations_by_name(automation.name)
    if existing:
        client.update_automation(existing[0].id, automation)
        for extra in existing[1:]:
            client.delete_automation(extra.id)
        return "updated"
    client.create_automation(automation)
    return "created"


def ensure_automations(client, model: str, deployment_ids: list, targets: list[Target],
                       crash_after_s: int = CRASH_AFTER_S) -> list[str]:
    """Create or update the automations of the module docstring; returns one line per
    automation for the command's output. ``targets`` come from ``resolve_target``; without
    any, the notification automations already on the server are left as they are."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    deployments = [f"prefect.deployment.{d}" for d in deployment_ids]
    mine = {"prefect.resource.role": "deployment", "prefect.resource.id": deployments}
    lines = []
    zombie = AutomationCore(
        name=automation_name(model, "unresponsive runs"),
        description=f"A deployed decflow run that sent no heartbeat for {crash_after_s} s "
                    f"(one every {HEARTBEAT_S} s) is set CRASHED.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=mine,
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=crash_after_s)),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED, name="Crashed",
            message=f"no heartbeat for {crash_after_s} s: the run's process died (killed, out "
                    "of memory, or its machine was lost); decflow's next run closes its "
                    "MLflow run")])
    lines.append(f"{_upsert(client, zombie)} automation {zombie.name!r} (CRASHED after "
                 f"{crash_after_s} s without a heartbeat)")
    if not targets:
        return lines
    resolved = targets

    def notify(subject: str, body: str) -> list:
        return [SendNotification(block_document_id=t.block_document_id, subject=subject,
                                 body=body) for t in resolved]

    model_events = {"prefect.resource.id": f"decflow.model.{model}"}
    payload = notify("{{ event.payload.subject }}", "{{ event.payload.text }}")
    crashed_body = ("{{ flow_run.name }} crashed: {{ flow_run.state.message }}\n"
                    # the server knows its UI's address only when PREFECT_UI_URL is set there
                    "Prefect run: {{ flow_run|ui_url or ('flow run id ' ~ flow_run.id) }}\n"
                    "Labels of its night are the old ones or none (never a partial write); "
                    "rerun the night: decflow run --run-date <night>, or the deployment.")
    wanted = [
        (automation_name(model, "failed night"), "decflow.night.failed", model_events, {},
         payload),
        (automation_name(model, "drift alert"), "decflow.drift.alert", model_events, {},
         payload),
        (automation_name(model, "crashed run"), "prefect.flow-run.Crashed",
         {"prefect.resource.id": "prefect.flow-run.*"}, mine,
         notify(f"decflow: a run of model {model} crashed: {{{{ flow_run.name }}}}",
                crashed_body)),
    ]
    shown = ", ".join(t.label for t in resolved)
    for name, event, match, related, actions in wanted:
        automation = AutomationCore(
            name=name, description=f"Sends {event} events to: {shown}",
            trigger=EventTrigger(expect={event}, match=match, match_related=related,
                                 posture=Posture.Reactive, threshold=1,
                                 within=timedelta(0)),
            actions=actions)
        lines.append(f"{_upsert(client, automation)} automation {name!r} -> {shown}")
    return lines
