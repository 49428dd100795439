"""Backfill: label (or retrain and label) a range of past date partitions."""

import datetime as dt
import time

from prefect import flow

from decflow.config import PipelineConfig
from decflow.data import partitioned
from decflow.engine.compute import WARM_ALL, WARM_SCORING, run_cluster
from decflow.errors import PartitionsFailed
from decflow.registry.versions import CHAMPION
from decflow.flows.recluster import recluster
from decflow.tasks.backfill import backfill_partitions, publish_backfill_summary
from decflow.tasks.runtime import prepare_run, redact_errors
from decflow.tasks.registry import load_model


class BackfillFailed(PartitionsFailed):
    """Some partitions failed; ``rows`` holds the per-date summary."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from ``start`` to ``end``, both included (ValueError when end < start)."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


@flow(name="backfill", flow_run_name="backfill-{start}..{end}")
@redact_errors
def backfill(config: PipelineConfig, start: dt.date, end: dt.date, model: str = CHAMPION,
             force: bool = False, retrain: bool = False) -> list[dict]:
    """Per date: validate -> score with `model` -> write labels (or, with retrain, the full
    recluster flow, in date order). Failed partitions don't stop the others; the flow fails at
    the end if any did."""
    config = prepare_run(config)
    days = date_range(start, end)
    if retrain and (model != CHAMPION or force):
        raise ValueError("retrain trains a new model per date and always runs: "
                         f"model={model!r} and force={force} do not apply")
    # every date's work on one Dask cluster
    with run_cluster(config.compute, warm=WARM_ALL if retrain else WARM_SCORING):
        if retrain:
            rows = [retrain_day(config, day) for day in days]
        else:
            version, files = load_model(config, model, required=True, as_files=True)
            rows = backfill_partitions(config, days, version, files, force)
    summary = publish_backfill_summary(rows)
    if any(r["status"] == "failed" for r in rows):
        raise BackfillFailed(summary, rows)
    return rows


def retrain_day(config: PipelineConfig, day: dt.date) -> dict:
    """The nightly flow as it would have run for ``day`` (a subflow), as a summary row."""
    t0 = time.perf_counter()
    row = {"date": day.isoformat(), "rows": 0, "status": "", "seconds": 0.0, "detail": ""}
    if day not in partitioned.list_partitions(config.source.uri, config.source.date_column):
        row.update(status="missing", detail=f"no source partition "
                                            f"{config.source.date_column}={day}")
        return row
    try:
        out = recluster(config=config, run_date=day)
        row.update(status="labelled", rows=out["labels"]["rows"],
                   detail=f"retrained: version {out['model_version']} registered, labelled by "
                          f"champion version {out['champion_version']}")
    except Exception as exc:  # reported per date; the flow fails after all dates have run
        row.update(status="failed", detail=f"{type(exc).__name__}: {exc}")
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row
