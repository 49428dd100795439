"""The deployments, defined once for `decflow serve`: nightly `recluster`, `backfill`, `promote`.

deployments/prefect.yaml declares the same three for `prefect deploy` against a server with a
work pool; tests/flows/test_deployments.py checks that both produce the same deployments.
Prefect is imported inside the functions so that the CLI can set its environment first.
"""

from decflow.config import PipelineConfig

NIGHTLY = "nightly"  # recluster/nightly
ON_DEMAND = "on-demand"  # backfill/on-demand, promote/on-demand: no schedule
NIGHTLY_CRON = "0 2 * * *"  # every day at 02:00 ...
NIGHTLY_TIMEZONE = "UTC"  # ... in this zone; the run of day D labels D-1 (see default_run_date)
# At most one nightly run at a time. A run that is still going when the next night is due makes
# that one wait (ENQUEUE) rather than be dropped (CANCEL_NEW): the waiting run keeps its
# scheduled time, so it still labels its own night once the slot is free.
NIGHTLY_CONCURRENCY = 1
NIGHTLY_COLLISION_STRATEGY = "ENQUEUE"
TAGS = ["decflow"]


def build_deployments(config: PipelineConfig, cron: str | None = None,
                      timezone: str | None = None) -> list:
    """The three `RunnerDeployment`s, each with `config` as its default parameter.

    Parameters are stored on the Prefect server and shown in its UI, so a config holding a
    secret (a password in a URI) is refused: the worker's environment supplies it instead
    (``DECFLOW_REGISTRY__TRACKING_URI``, ``MLFLOW_TRACKING_PASSWORD``, ``AWS_*``), and deployed
    runs apply their worker's ``DECFLOW_*`` variables over the parameter.

    Args:
        config: the pipeline config every run gets (editable per run in the Prefect UI).
        cron: nightly schedule (default ``NIGHTLY_CRON``).
        timezone: IANA zone of the schedule (default ``NIGHTLY_TIMEZONE``).

    Raises:
        ValueError: an invalid cron string, an unknown time zone, or a secret in the config.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from decflow.flows.backfill import backfill
    from decflow.flows.promote import promote
    from decflow.flows.recluster import recluster

    secret = config.secrets()
    if secret:
        raise ValueError(
            f"the config holds a secret in {', '.join(secret)}; deployment parameters are "
            "stored on the Prefect server and shown in its UI. Leave the password out of the "
            "config and give it to the worker's environment instead, e.g. "
            "DECFLOW_REGISTRY__TRACKING_URI=http://user:password@host:5000 or "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
    cron = cron or NIGHTLY_CRON
    timezone = timezone or NIGHTLY_TIMEZONE
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone={timezone!r} is not an IANA time zone (e.g. Europe/Berlin)")
    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as exc:
        raise ValueError(f"cron={cron!r} is not a valid cron schedule: {exc}") from None
    parameters = {"config": config.model_dump(mode="json")}
    # Module entrypoints: the flows are an installed package, so serving works from any directory.
    common = dict(parameters=parameters, tags=TAGS, entrypoint_type=EntrypointType.MODULE_PATH)
    return [
        recluster.to_deployment(NIGHTLY, schedules=[schedule], **common,
                                concurrency_limit=ConcurrencyLimitConfig(
                                    limit=NIGHTLY_CONCURRENCY,
                                    collision_strategy=NIGHTLY_COLLISION_STRATEGY)),
        backfill.to_deployment(ON_DEMAND, **common),
        promote.to_deployment(ON_DEMAND, **common),
    ]


def absolute_paths(config: PipelineConfig, base: str | None = None) -> PipelineConfig:
    """``config`` with its local relative paths (home, source and labels datasets, suite)
    made absolute against ``base`` (default: the current directory), so a deployed run finds
    them whatever its working directory. URIs with a scheme (s3://, ...) are kept."""
    import os

    def fix(path: str | None) -> str | None:
        if path is None or "://" in path or os.path.isabs(path):
            return path
        return os.path.abspath(os.path.join(base or os.getcwd(), path))

    data = config.model_dump()
    data["home"] = fix(config.home)
    data["source"]["uri"] = fix(config.source.uri)
    data["labels"]["uri"] = fix(config.labels.uri)
    data["validation"]["suite_path"] = fix(config.validation.suite_path)
    return PipelineConfig.model_validate(data)


def deploy(config: PipelineConfig, work_pool: str, cron: str | None = None,
           timezone: str | None = None, notify: list[str] | None = None,
           crash_after_s: int | None = None) -> tuple[list[str], bool, list[str]]:
    """Create or update the three deployments on the Prefect server, on ``work_pool`` (created as
    a process pool when missing), and their automations (``flows/notifications.py``): dead
    runs set CRASHED after ``crash_after_s``; with ``notify`` targets, messages for a failed
    night, a drift alert and a crashed run.

    Returns:
        The deployments' ``flow/deployment`` names, whether the pool was created, and one line
        per automation created or updated.

    Raises:
        ValueError: see ``build_deployments``.
    """
    from prefect import deploy as prefect_deploy, get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from decflow.flows.notifications import (CRASH_AFTER_S, check_target, ensure_automations,
                                             heartbeat_env, resolve_target)

    for target in notify or []:
        check_target(target)  # before anything is written
    deployments = build_deployments(config, cron=cron, timezone=timezone)
    for d in deployments:  # heartbeats from every run the pool's workers start
        d.job_variables = {**d.job_variables, "env": heartbeat_env()}
    created = False
    with get_client(sync_client=True) as client:
        targets = [resolve_target(client, t) for t in notify or []]  # a missing block: refused
        try:
            client.read_work_pool(work_pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=work_pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
            created = True
    prefect_deploy(*deployments, work_pool_name=work_pool, build=False, push=False,
                   print_next_steps_message=False)
    names = [f"{d.flow_name}/{d.name}" for d in deployments]
    with get_client(sync_client=True) as client:
        ids = [client.read_deployment_by_name(name).id for name in names]
        automations = ensure_automations(client, config.registry.model_name, ids, targets,
                                         crash_after_s or CRASH_AFTER_S)
    return names, created, automations
