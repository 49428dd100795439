"""The nightly recluster flow: a table of contents over tasks/ (no maths here)."""

import datetime as dt

from prefect import flow

from decflow.config import PipelineConfig
from decflow.engine.compute import run_cluster
from decflow.flows.promote import gate_candidate
from decflow.registry.names import Tag
from decflow.tasks.data import scan_night, snapshot_night, validate_features
from decflow.tasks.events import announced_night
from decflow.tasks.insight import monitor_drift, profile_clusters, publish_report
from decflow.tasks.labels import label_partition
from decflow.tasks.runtime import night_lock, prepare_run, redact_errors
from decflow.tasks.promotion import align_cluster_ids, sample_reference_rows
from decflow.tasks.registry import champion_weights, load_model, register_model
from decflow.tasks.tracking import link_mlflow_run, system_metrics, tracked_run
from decflow.tasks.train import (embed_features, evaluate_model, fit_dec, init_centroids,
                                 pretrain_autoencoder)


def yesterday() -> dt.date:
    return dt.date.today() - dt.timedelta(days=1)


def default_run_date() -> dt.date:
    """The night a run labels: the day before its scheduled start, in its schedule's time zone.

    Inside a flow run this reads the run's scheduled start time, not the wall clock, so a late or
    queued nightly run still labels its own night (the 02:00 run of day D labels D-1). The zone is
    that of the deployment's schedule; runs without one use the local zone. Outside a flow run:
    the local date minus one day.
    """
    from prefect.runtime import deployment, flow_run

    if flow_run.id is None:
        return yesterday()
    zone = _schedule_zone(deployment.id)
    return flow_run.scheduled_start_time.astimezone(zone).date() - dt.timedelta(days=1)


def _schedule_zone(deployment_id: str | None):
    """ZoneInfo of the deployment's schedule (active ones first); None: no deployment/schedule."""
    from zoneinfo import ZoneInfo

    from prefect import get_client

    if deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        schedules = client.read_deployment(deployment_id).schedules
    zones = [s.schedule.timezone for s in sorted(schedules, key=lambda s: not s.active)
             if getattr(s.schedule, "timezone", None)]
    return ZoneInfo(zones[0]) if zones else None


def run_name() -> str:
    """``recluster-<run date>``: the night the run labels (also for scheduled runs)."""
    from prefect.runtime import flow_run

    return f"recluster-{flow_run.parameters.get('run_date') or default_run_date()}"


@flow(name="recluster", flow_run_name=run_name)
@redact_errors
def recluster(config: PipelineConfig = PipelineConfig(), run_date: dt.date | None = None,
              progress: bool = False) -> dict:
    """Retrain on the window ending at run_date, register and gate the model, write labels."""
    run_date = run_date or default_run_date()
    day = run_date.isoformat()
    tags = {Tag.FLOW: "recluster", Tag.RUN_DATE: day}
    with announced_night(config, f"recluster-{day}", day) as outcome:
        config = prepare_run(config)
        # one Dask cluster for the run's validation, k-means and labelling, started now
        with run_cluster(config.compute), night_lock(config, run_date), \
                tracked_run(config, f"recluster-{day}", tags) as run_id:
            outcome.run_id = run_id
            window = scan_night(config.source, run_date, None,
                                config.validation.min_window_days)
            # every row validated; the training sample taken from the same read
            validation, train = validate_features(window, config, run_id)
            encoder, X = embed_features(train, config, run_id)
            old_version, champion = load_model(config)
            warm = champion_weights(champion, encoder, config)
            with system_metrics(config, run_id):  # the machine's load while it trains
                model = pretrain_autoencoder(X, config, run_id, warm, progress)
                centers, target = init_centroids(model, X, config, run_id)
                model = fit_dec(model, X, centers, target, config, run_id)
            alignment = align_cluster_ids(model, X, train, old_version, champion, config, run_id)
            metrics = evaluate_model(model, X, train, config, run_id)
            profile = profile_clusters(model, X, train, config, run_id)
            version = register_model(model, encoder, train, window.lineage, validation, metrics,
                                     config, run_id, day, alignment, profile)
            links = link_mlflow_run(config, run_id, version)
            decision = None
            if config.promotion.auto_promote or old_version is None:  # a first: judge it
                decision = gate_candidate(config, version, sample_reference_rows(train, config),
                                          need_champion=True)
            champion_version, champion = load_model(config)
            today, late = snapshot_night(window, run_date)
            written = label_partition(today, champion_version, champion, config, run_id, late)
            drift = monitor_drift(config, run_id, run_date, written,
                                  champion.estimator.n_clusters,
                                  alignment["label_churn"] if alignment else None,
                                  version, str(champion_version.version),
                                  decision.decision if decision else None)
            page = publish_report(config, run_id, run_date)
            outcome.night(links, page, version, str(champion_version.version), decision,
                          written, drift)
    return {"run_id": run_id, "run_date": day, "model_version": version,
            "champion_version": str(champion_version.version), "metrics": metrics,
            "alignment": alignment, "promotion": decision.to_dict() if decision else None,
            "labels": written, "links": links, "profiles": profile, "drift": drift,
            "report": page}
