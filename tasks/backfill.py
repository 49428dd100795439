"""Backfill partitions: validate, score with a fixed model and write labels on the Dask cluster."""

import contextlib
import datetime as dt
import time

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from decflow.config import PipelineConfig
from decflow.data import validation
from decflow.data.resume import plan_day
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.engine.payload import scatter_model
from decflow.errors import Conflict

from .labels import labels_spec
from .runtime import night_lock, redact_errors


@task(name="backfill_partitions", cache_policy=NO_CACHE)
@redact_errors
def backfill_partitions(config: PipelineConfig, days: list[dt.date], version, model,
                        force: bool = False) -> list[dict]:
    """Validate and label each day on the Dask cluster; a failed day does not stop the others.

    Concurrency is the cluster's: the row-group chunks of every partition to label share one
    queue over all worker threads, and the model is sent to each worker once.

    Returns:
        One summary row per day (labelled/skipped/missing/failed), in the order of ``days``.
    """
    planned = [plan_day(config.source, config.labels_uri(), config.registry.model_name,
                        str(version.version), day, force) for day in days]
    rows = [row for row, _ in planned]
    with contextlib.ExitStack() as held:
        for day, (row, _) in zip(days, planned):
            if not row["status"]:  # a day another run is writing fails; the others go on
                try:
                    held.enter_context(night_lock(config, day))
                except Conflict as exc:
                    row.update(status="failed", detail=f"Conflict: {exc}")
        _label(config, [p for p in planned if not p[0]["status"]], version, model)
    return rows


def _label(config: PipelineConfig, planned: list, version, model) -> None:
    """Label the planned days on one Dask client; fill in each day's summary row."""
    todo = [row for row, _ in planned]
    scans = [scan for _, scan in planned]
    if not todo:
        return
    t0 = time.perf_counter()
    with dask_client(config.compute) as client:
        payload = scatter_model(client, model)
        outcomes = scoring.label_partitions(client, scans, config, payload,
                                            labels_spec(config, version))
        for row, out in zip(todo, outcomes):
            row["seconds"] = round(time.perf_counter() - t0, 3)  # since the previous one
            t0 = time.perf_counter()
            if out.error is not None:
                row.update(status="failed", detail=f"{type(out.error).__name__}: {out.error}")
            elif not out.validation_result.success:
                err = validation.DataValidationError(out.validation_result)
                row.update(status="failed", detail=f"{type(err).__name__}: {err}")
            else:
                row.update(status="labelled", rows=out.rows_written,
                           detail=f"{row['detail']}model version {version.version}")
            get_run_logger().info("%s %s: %s rows, %s", row["date"], row["status"], row["rows"],
                                  row["detail"])


@task(name="publish_backfill_summary", cache_policy=NO_CACHE)
@redact_errors
def publish_backfill_summary(rows: list[dict]) -> str:
    """A table artifact (date, rows, status, seconds, detail); returns the text summary."""
    create_table_artifact(key="backfill-summary", table=rows,
                          description="Backfill: one row per date partition")
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [f"{r['date']}  {r['status']:<9} {r['rows']:>7} rows  {r['seconds']:>7.2f} s  "
             f"{r['detail']}" for r in rows]
    head = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    summary = f"backfill of {len(rows)} partitions: {head}\n" + "\n".join(lines)
    get_run_logger().info(summary)
    return summary
