"""What users look at after a run: cluster profiles (what each cluster is) and drift over
nights, logged to MLflow and given to the Prefect run."""

import datetime as dt
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from decflow.config import PipelineConfig
from decflow.insight import monitoring
from decflow.insight import profiles
from decflow.model.estimator import DeepEmbeddedClustering
from decflow.registry import aliases as registry
from decflow.registry.names import Artifact, Tag

from .runtime import redact_errors
from .tracking import client, log_dict, log_figure, log_metrics, log_text, run_url


@task(name="profile_clusters", cache_policy=NO_CACHE)
@redact_errors
def profile_clusters(est: DeepEmbeddedClustering, X: np.ndarray, frame: pd.DataFrame,
                     config: PipelineConfig, run_id: str) -> dict:
    """Profile each cluster of the training rows (after the cluster ids were aligned) and log
    the profiles: ``profiles/cluster_profiles.{json,parquet,md,html}`` in the MLflow run and a
    ``cluster-profiles`` table artifact on the Prefect run.

    Returns:
        ``{"artifact": "runs:/<run_id>/profiles/cluster_profiles.json", "n_clusters": k}``,
        the pointer the registered version carries (tag ``profiles.artifact``).
    """
    ids, conf, dist = est.assign(X)
    label_column = config.source.label_column
    prof = profiles.cluster_profiles(frame, ids, conf, dist, config.features,
                                     config.source.id_column, config.model.n_clusters,
                                     label_column=label_column if label_column in frame
                                     else None)
    folder = Artifact.PROFILES.rsplit("/", 1)[0]
    log_dict(config, run_id, prof.to_dict(), Artifact.PROFILES)
    log_text(config, run_id, prof.to_markdown(), f"{folder}/cluster_profiles.md")
    log_text(config, run_id, prof.to_html(), f"{folder}/cluster_profiles.html")
    with tempfile.TemporaryDirectory(prefix="decflow-profiles-") as tmp:
        path = Path(tmp) / "cluster_profiles.parquet"
        prof.to_frame().to_parquet(path, index=False)
        client(config).log_artifact(run_id, str(path), folder)
    create_table_artifact(key="cluster-profiles", table=prof.summary(),
                          description=f"What each of the {config.model.n_clusters} clusters is "
                                      f"(training rows, {prof.n_rows} rows)")
    return {"artifact": f"runs:/{run_id}/{Artifact.PROFILES}",
            "n_clusters": config.model.n_clusters}


@task(name="monitor_drift", cache_policy=NO_CACHE)
@redact_errors
def monitor_drift(config: PipelineConfig, run_id: str, run_date: dt.date, labels: dict,
                  n_clusters: int, label_churn: float | None, version: str,
                  champion_version: str, decision: str | None) -> dict:
    """Tonight's drift (``monitoring.night_drift``): label churn against the champion (from
    ``align_cluster_ids``; None without a champion) and the cluster-size shift of the labels
    written tonight against the newest earlier labels partition; checks
    ``monitoring.max_churn`` / ``max_size_shift``.

    Logs ``monitoring/drift.json``, the metrics ``size_shift_tvd``, ``size_shift_psi``,
    ``drift_alert`` and ``labels_rows``, the pictures ``plots/sizes_vs_last_night.png`` and
    ``plots/drift_history.png`` (the last ``monitoring.history_days`` nights), and tags the run
    with its model and champion versions, the promotion decision and ``monitoring.alert``.

    Past a threshold the run stays green (the labels are written; what serves is the gates'
    business): the run and the model version are tagged ``monitoring.alert=true`` with the
    reasons, a warning is logged, and the Prefect run gets a ``drift-warning`` artifact.
    (Longer than a task should be: it is the one place that records the night's drift, in
    MLflow and in Prefect; the measure itself is the library's.)
    """
    mon = config.monitoring
    drift = monitoring.night_drift(config, run_date, n_clusters, label_churn)
    log_metrics(config, run_id, {**drift.metrics(), "labels_rows": float(labels["rows"])})
    mlflow = client(config)
    for key, value in {Tag.MODEL_VERSION: version,
                       Tag.CHAMPION_VERSION: champion_version,
                       Tag.PROMOTION_DECISION: decision or "not gated",
                       Tag.MONITORING_ALERT: str(drift.alert).lower(),
                       Tag.MONITORING_ALERTS: "; ".join(drift.alerts)[:4000]}.items():
        mlflow.set_tag(run_id, key, value)
    log_dict(config, run_id, drift.to_dict(), Artifact.DRIFT)
    log_figure(config, run_id, monitoring.plot_sizes_vs_last_night(drift),
               Artifact.SIZES_VS_LAST_NIGHT)
    nights = monitoring.history(config.tracking_uri(), config.registry.experiment,
                                days=mon.history_days, end=run_date, current_run_id=run_id)
    log_figure(config, run_id, monitoring.plot_history(nights, max_churn=mon.max_churn,
                                                       max_size_shift=mon.max_size_shift),
               Artifact.DRIFT_HISTORY)
    create_markdown_artifact(key="drift", markdown=drift.to_markdown(),
                             description=f"Drift of {run_date} against "
                                         f"{drift.previous_date or 'no earlier night'}")
    if drift.alert:
        registry.set_version_tags(config.tracking_uri(), config.registry.model_name, version,
                                  {Tag.MONITORING_ALERT: "true",
                                   Tag.MONITORING_ALERTS: "; ".join(drift.alerts)[:4000]})
        create_markdown_artifact(key="drift-warning", markdown=drift.to_markdown(),
                                 description="; ".join(drift.alerts))
        get_run_logger().warning("drift alert for %s: %s", run_date, "; ".join(drift.alerts))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in drift.to_dict().items()}


@task(name="publish_report", cache_policy=NO_CACHE)
@redact_errors
def publish_report(config: PipelineConfig, run_id: str, run_date: dt.date) -> dict:
    """The run's HTML report (``decflow report``): logged into the MLflow run as
    ``report/report.html``, written to ``<home>/reports/recluster-<run date>.html``, and linked
    from the Prefect run (``run-report``). Rendered as the run's last step, so it shows the run
    as still running; ``decflow report`` renders it again after the fact."""
    from prefect.artifacts import create_link_artifact

    from decflow.insight.report import log_report, report_path

    path = report_path(config, run_date.isoformat())
    artifact = log_report(config, run_id, out=path)
    link = f"{run_url(config, run_id)}/artifactPath/{Artifact.REPORT}"
    create_link_artifact(key="run-report", link=link, link_text=f"run report of {run_date}",
                         description=f"one self-contained HTML page; also at {path.resolve()} "
                                     f"on the machine that ran the flow")
    return {"artifact": artifact, "path": str(path.resolve()), "link": link}
