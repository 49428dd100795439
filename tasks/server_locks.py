"""A night's lock on the Prefect server: one slot of a global concurrency limit per labels
dataset and night, so that runs on other hosts (other homes, other workers) writing the same
night are refused, not only the processes sharing a home's ``flock`` (``decflow.locks``).

The slot is held with a lease that the run renews every ``LEASE_S / 3`` seconds while it lives
and releases when it ends, however it ends short of ``kill -9``. Who holds it (lease, flow run,
host, pid, since) is kept in a Prefect variable of the same name. A run refused by a held slot
looks at that holder: one whose flow run is in a final state on the server, or whose process is
gone from this host, held it when it died, and its lease is released at once rather than
blocking the night until the lease runs out (``LEASE_S`` at most, for a holder on another host
that died without a word: its lease is not renewed).

Limits are created when first needed (limit 1) and kept: one per labels dataset and night,
named ``decflow-labels-<digest>-<night>``. Deleting one no run holds is harmless.
"""

import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
import threading
import uuid

from decflow.config import PipelineConfig
from decflow.environment import TEMPORARY_PREFECT_API_ENV
from decflow.errors import Conflict, ServiceUnavailable
from decflow.redaction import redact

LEASE_S = 300.0
_log = logging.getLogger("decflow.locks")


def night_limit_name(config: PipelineConfig, day: dt.date) -> str:
    """The global concurrency limit of ``day``'s labels: the same for every config that
    writes the same labels dataset, whatever its home (``decflow-labels-<digest>-<day>``)."""
    dataset = f"{config.labels_uri().rstrip('/')}|{config.source.date_column}"
    return f"decflow-labels-{hashlib.sha256(dataset.encode()).hexdigest()[:12]}-{day.isoformat()}"


def server_api() -> str | None:
    """The Prefect server's API URL, None when runs use a temporary local server: Prefect's
    own, or the one a command started for itself (``TEMPORARY_PREFECT_API_ENV``)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url or url == os.environ.get(TEMPORARY_PREFECT_API_ENV):
        return None
    return url


@contextlib.contextmanager
def night_slot(config: PipelineConfig, day: dt.date):
    """Hold ``day``'s slot on the Prefect server for the block; nothing without a server.

    Raises:
        Conflict: a live run holds it (the message names the holder).
        ServiceUnavailable: the server did not answer.
    """
    import httpx
    from prefect import get_client

    api = server_api()
    if api is None:
        yield
        return
    name = night_limit_name(config, day)
    what = f"the labels of {day.isoformat()} in {redact(config.labels_uri())}"
    try:
        with get_client(sync_client=True) as client:
            lease = _take(client, name, what)
    except httpx.TransportError as exc:
        raise ServiceUnavailable(f"Prefect server {redact(api)} did not answer while taking "
                                 f"the lock of {what}: {exc}") from None
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lease, stop), daemon=True,
                               name=f"renew {name}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=10)
        try:
            with get_client(sync_client=True) as client:
                client.release_concurrency_slots_with_lease(lease)
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself
            _log.warning("could not release the Prefect concurrency slot %s (its lease "
                         "expires within %.0f s): %s", name, LEASE_S, redact(str(exc))[:300])


def _take(client, name: str, what: str) -> uuid.UUID:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    except ObjectAlreadyExists:
        pass
    lease = _increment(client, name)
    if lease is None:
        holder = _holder(client, name)
        if holder is not None and _dead(client, holder):
            _log.warning("the run that held %s is gone (%s): releasing its slot", what,
                         _describe(holder))
            _release_quietly(client, holder.get("lease_id"))
            lease = _increment(client, name)
        if lease is None:
            raise Conflict(f"a run writing {what} is in progress on another host or home: the "
                           f"Prefect server's concurrency limit {name!r} is taken"
                           + (f" by {_describe(holder)}" if holder else "")
                           + "; nothing was done, retry when it is finished")
    _record(client, name, lease)
    return lease


def _increment(client, name: str) -> uuid.UUID | None:
    """A lease on one slot of ``name``; None when the slot is taken (HTTP 423)."""
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        response = client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=LEASE_S)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 423:
            return None
        raise
    return uuid.UUID(response.json()["lease_id"])


def _record(client, name: str, lease: uuid.UUID) -> None:
    """Who holds the slot, in the variable ``name`` (best effort: only refusals read it)."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.runtime import flow_run

    value = {"lease_id": str(lease), "flow_run_id": flow_run.id, "flow_run": flow_run.name,
             "host": socket.gethostname(), "pid": os.getpid(),
             "started": _started(os.getpid()),
             "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        if client.read_variable_by_name(name) is None:
            client.create_variable(VariableCreate(name=name, value=value))
        else:
            client.update_variable(VariableUpdate(name=name, value=value))
    except Exception as exc:  # noqa: BLE001 - a refusal then names no holder
        _log.warning("could not record the holder of %s: %s", name, redact(str(exc))[:300])


def _holder(client, name: str) -> dict | None:
    try:
        variable = client.read_variable_by_name(name)
    except Exception:  # noqa: BLE001 - no holder known
        return None
    return variable.value if variable is not None and isinstance(variable.value, dict) else None


def _started(pid: int) -> float | None:
    """When process ``pid`` started (None: no such process), to tell a reused pid apart."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _dead(client, holder: dict) -> bool:
    """Whether the holder's run is over: its process is gone from this host (no process with
    its pid, or one started at another time: the pid was reused, e.g. in a restarted
    container), or its flow run is in a final state on the server. Unknown: alive."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        started = _started(holder["pid"])
        if started is None or started != holder.get("started"):
            return True
    run_id = holder.get("flow_run_id")
    if run_id:
        try:
            state = client.read_flow_run(uuid.UUID(str(run_id))).state
        except Exception:  # noqa: BLE001 - unknown to this server
            return False
        return state is not None and state.is_final()
    return False


def _describe(holder: dict) -> str:
    run = f"flow run {holder.get('flow_run')} " if holder.get("flow_run") else ""
    return f"{run}(pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')})"


def _release_quietly(client, lease_id: str | None) -> None:
    if not lease_id:
        return
    try:
        client.release_concurrency_slots_with_lease(uuid.UUID(lease_id))
    except Exception as exc:  # noqa: BLE001 - another run released it first
        _log.debug("releasing the stale lease %s: %s", lease_id, exc)


def _renew(lease: uuid.UUID, stop: threading.Event) -> None:
    """Renew the lease every LEASE_S / 3 until ``stop``; a failed renewal is logged (the next
    one may succeed within the lease)."""
    from prefect import get_client

    while not stop.wait(LEASE_S / 3):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease, LEASE_S)
        except Exception as exc:  # noqa: BLE001 - a server hiccup: try again next time
            _log.warning("could not renew the Prefect concurrency lease %s: %s", lease,
                         redact(str(exc))[:300])
