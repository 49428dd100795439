"""Resuming a backfill: which dates still need labels from a given model version.

A date is skipped only when its labels come from the same model (name and version) *and* from
the same source files (the digest and row count recorded in the labels file): rows added,
replaced or removed since are labelled again; ``force`` labels every date. A date without a
source partition is "missing", one whose files cannot be read "failed"; neither stops the
others.
"""

import datetime as dt

from decflow.config import SourceConfig
from decflow.data import label_store, partitioned, sources


def plan_day(source: SourceConfig, labels_uri: str, model_name: str, version: str,
             day: dt.date, force: bool = False) -> tuple[dict, sources.WindowScan | None]:
    """A date's backfill row and its scan.

    Returns:
        ``({"date", "rows", "status", "seconds", "detail"}, scan)``: status "missing" or
        "failed" (scan None), "skipped" (already labelled from these files by this version;
        rows = its labels), or "" (to label; ``detail`` says why when its source changed).
    """
    row = {"date": day.isoformat(), "rows": 0, "status": "", "seconds": 0.0, "detail": ""}
    if day not in partitioned.list_partitions(source.uri, source.date_column):
        row.update(status="missing", detail=f"no source partition {source.date_column}={day}")
        return row, None
    try:  # an unreadable file fails its day only
        scan = sources.scan_window(source, day, 1)
    except (OSError, ValueError) as exc:
        row.update(status="failed", detail=f"{type(exc).__name__}: {exc}")
        return row, None
    existing = label_store.labels_versions(labels_uri, source.date_column, day)
    same_model = (existing is not None and existing.n_rows
                  and existing.model_versions == {str(version)}
                  and existing.model_names == {model_name})
    if same_model and not force:
        if (existing.source_digest, existing.source_rows) == (scan.lineage.digest, scan.n_rows):
            row.update(status="skipped", rows=existing.n_rows,
                       detail=f"already labelled by version {version}")
            return row, scan
        row["detail"] = (f"source changed since it was labelled ({existing.source_rows} -> "
                         f"{scan.n_rows} rows); ")
    return row, scan
