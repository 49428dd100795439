"""One partition of a backfill: validate, score with a fixed model, write labels."""

import datetime as dt
import time

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from decflow import storage, validation
from decflow.config import PipelineConfig
from decflow.tracking import score_frame


@task(name="backfill_partition", task_run_name="backfill_partition-{day}", cache_policy=NO_CACHE)
def backfill_partition(config: PipelineConfig, day: dt.date, version, model,
                       force: bool = False) -> dict:
    """Label ``day``; never raises: the outcome (labelled/skipped/missing/failed) is returned."""
    t0 = time.perf_counter()
    row = {"date": day.isoformat(), "rows": 0, "status": "", "seconds": 0.0, "detail": ""}
    src, labels_uri = config.source, config.labels_uri()
    try:
        if day not in storage.list_partitions(src.uri, src.date_column):
            row.update(status="missing", detail=f"no source partition {src.date_column}={day}")
            return row
        existing = storage.read_partition(labels_uri, src.date_column, day)
        if (existing is not None and not force and len(existing)
                and set(existing["model_version"]) == {str(version.version)}
                and set(existing["model_name"]) == {config.registry.model_name}):
            row.update(status="skipped", rows=len(existing),
                       detail=f"already labelled by version {version.version}")
            return row
        frame, _ = storage.load_window(src, day, 1)
        report = validation.validate_frame(frame, src, config.features, config.validation)
        validation.check(report)
        scores = score_frame(model.encoder, model.estimator, frame)
        table = storage.labels_table(
            frame[src.id_column], scores["cluster_id"], scores["confidence"],
            scores["distance"], id_column=src.id_column, model_name=config.registry.model_name,
            model_version=str(version.version), run_id=version.run_id or "")
        storage.write_partition(labels_uri, src.date_column, day, table)
        row.update(status="labelled", rows=table.num_rows,
                   detail=f"model version {version.version}")
    except Exception as exc:  # reported per partition; the flow fails after all have run
        row.update(status="failed", detail=f"{type(exc).__name__}: {exc}")
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def backfill_partitions(config: PipelineConfig, days: list[dt.date], version, model,
                        force: bool = False) -> list[dict]:
    """Run ``backfill_partition`` for each day, at most ``config.backfill.concurrency`` at once.

    A bounded thread pool (not waves): a slow partition holds one slot, not the next batch. The
    model is shared; its network is in eval mode, so inference from several threads is safe.

    Returns:
        One summary row per day, in the order of ``days``.
    """
    with ThreadPoolTaskRunner(max_workers=config.backfill.concurrency) as runner:
        futures = [runner.submit(backfill_partition,
                                 {"config": config, "day": day, "version": version,
                                  "model": model, "force": force})
                   for day in days]
        return [f.result() for f in futures]


@task(name="publish_backfill_summary", cache_policy=NO_CACHE)
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
