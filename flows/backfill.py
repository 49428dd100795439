"""Backfill: label (or retrain and label) a range of past date partitions."""

import datetime as dt

from prefect import flow

from decflow.config import PipelineConfig
from flows.recluster import recluster
from tasks.backfill import backfill_partition, publish_backfill_summary
from tasks.registry import load_champion


class BackfillFailed(RuntimeError):
    """Some partitions failed; ``rows`` holds the per-date summary."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


@flow(name="backfill")
def backfill(config: PipelineConfig, start: dt.date, end: dt.date, model: str = "champion",
             force: bool = False, retrain: bool = False) -> list[dict]:
    """Per date: validate -> score with `model` -> write labels (or, with retrain, the full
    recluster flow, in date order). Failed partitions don't stop the others; the flow fails at
    the end if any did."""
    days = date_range(start, end)
    if retrain:
        rows = [retrain_day(config, day) for day in days]
    else:
        version, scorer = load_champion(config, model)
        if version is None:
            raise ValueError(f"model {config.registry.model_name!r} has no version or alias "
                             f"{model!r} in {config.tracking_uri()}")
        rows = []
        wave = config.backfill.concurrency  # at most this many partitions in flight
        for i in range(0, len(days), wave):
            futures = [backfill_partition.submit(config, day, version, scorer, force)
                       for day in days[i:i + wave]]
            rows += [f.result() for f in futures]
    summary = publish_backfill_summary(rows)
    if any(r["status"] == "failed" for r in rows):
        raise BackfillFailed(summary, rows)
    return rows


def retrain_day(config: PipelineConfig, day: dt.date) -> dict:
    """The nightly flow as it would have run for ``day`` (a subflow), as a summary row."""
    import time

    from decflow import storage

    t0 = time.perf_counter()
    row = {"date": day.isoformat(), "rows": 0, "status": "", "seconds": 0.0, "detail": ""}
    if day not in storage.list_partitions(config.source.uri, config.source.date_column):
        row.update(status="missing", detail="no source partition")
        return row
    try:
        out = recluster(config=config, run_date=day)
        row.update(status="retrained", rows=out["labels"]["rows"],
                   detail=f"model version {out['model_version']}, champion "
                          f"{out['champion_version']}")
    except Exception as exc:
        row.update(status="failed", detail=f"{type(exc).__name__}: {exc}")
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row
