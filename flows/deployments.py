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

    Args:
        config: the pipeline config every run gets (editable per run in the Prefect UI).
        cron: nightly schedule (default ``NIGHTLY_CRON``).
        timezone: IANA zone of the schedule (default ``NIGHTLY_TIMEZONE``).

    Raises:
        ValueError: an invalid cron string or an unknown time zone.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.backfill import backfill
    from flows.promote import promote
    from flows.recluster import recluster

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
