"""Regression tests for the data-path defects of the reliability issue: labels only for the rows
that were validated, no empty night that wipes labels, labels never over the source, and a
backfill resume that notices a changed source."""

import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from decflow.data import partitioned
from decflow.errors import ConfigError, DataError
from flowkit import DAYS, RUN_DATE, make_rows, tiny_config, write_source
from decflow.flows.backfill import backfill
from decflow.flows.recluster import recluster
import decflow.flows.recluster as recluster_module


def _table(cols: dict) -> pa.Table:
    return pa.table({k: (pa.array([list(map(float, e)) for e in v], pa.list_(pa.float32()))
                         if k == "emb" else pa.array(v)) for k, v in cols.items()})


def _registry(config):
    client = MlflowClient(config.tracking_uri(), registry_uri=config.tracking_uri())
    try:
        model = client.get_registered_model(config.registry.model_name)
    except Exception:  # noqa: BLE001 - no model yet is a valid state to compare
        return None
    versions = client.search_model_versions(f"name='{config.registry.model_name}'")
    return sorted(str(v.version) for v in versions), dict(model.aliases)


def _files(root: str) -> dict:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            out[p] = (os.path.getsize(p), os.path.getmtime(p))
    return out


def test_a_file_landing_during_training_is_not_labelled(tmp_path, monkeypatch):
    """Defect 1: the run date's partition was read again after training, so a file that landed
    meanwhile (here with an id that another day already has) was labelled unvalidated."""
    source = str(tmp_path / "source")
    write_source(source)
    config = tiny_config(tmp_path, source, train={"pretrain_epochs": 3})
    late = os.path.join(source, f"ds={RUN_DATE}", "part-late.parquet")
    original = recluster_module.fit_dec

    def fit_dec_while_a_file_lands(*args, **kwargs):
        cols = make_rows(5, 0, seed=9)  # ids 0..4 already exist on the first day
        pq.write_table(_table(cols), late)
        return original(*args, **kwargs)

    monkeypatch.setattr(recluster_module, "fit_dec", fit_dec_while_a_file_lands)
    result = recluster(config=config, run_date=RUN_DATE)
    assert os.path.exists(late)
    labels = partitioned.read_partition(config.labels_uri(), "ds", RUN_DATE)
    validated = pq.read_table(os.path.join(source, f"ds={RUN_DATE}", "part-0.parquet"),
                              columns=["id"]).column("id").to_pylist()
    assert sorted(labels["id"]) == sorted(validated)  # 90 rows; none of the late file's
    assert result["labels"]["rows"] == 90
    assert result["labels"]["unlabelled_files"] == [f"ds={RUN_DATE}/part-late.parquet"]


@pytest.mark.parametrize("emptiness", ["zero-row file", "empty folder"])
def test_an_empty_run_date_fails_before_training_and_keeps_the_labels(tmp_path, emptiness):
    """Defect 2: a run date holding one 0-row file passed (min_rows applies to the window) and
    replaced 90 labels with 0; an empty folder trained and promoted, then failed (KeyError)."""
    source = str(tmp_path / "source")
    write_source(source)
    config = tiny_config(tmp_path, source, train={"pretrain_epochs": 3})
    recluster(config=config, run_date=RUN_DATE)
    before_labels, before_registry = _files(config.labels_uri()), _registry(config)
    part = os.path.join(source, f"ds={RUN_DATE}")
    schema = pq.read_schema(os.path.join(part, "part-0.parquet"))
    shutil.rmtree(part)
    os.makedirs(part)
    if emptiness == "zero-row file":
        pq.write_table(schema.empty_table(), os.path.join(part, "part-0.parquet"))
    with pytest.raises(DataError, match=rf"source partition ds={RUN_DATE} has no rows"):
        recluster(config=config, run_date=RUN_DATE)
    assert _files(config.labels_uri()) == before_labels
    assert _registry(config) == before_registry


@pytest.mark.parametrize("labels", ["same", "inside"])
def test_labels_are_never_written_into_the_source(tmp_path, labels):
    """Defect 3: with labels.uri equal to source.uri, labels replaced the source's files."""
    source = str(tmp_path / "source")
    write_source(source)
    uri = source if labels == "same" else os.path.join(source, "labels")
    config = tiny_config(tmp_path, source, labels={"uri": uri}, train={"pretrain_epochs": 3})
    before = _files(source)
    with pytest.raises(ConfigError, match="labels.uri .* must not be inside source.uri"):
        recluster(config=config, run_date=RUN_DATE)
    assert _files(source) == before
    assert _registry(config) is None


def test_backfill_resume_relabels_a_partition_whose_source_changed(tmp_path):
    """Defect 8: the resume skipped partitions labelled by the same model version, even when
    the source partition had changed since (rows added)."""
    source = str(tmp_path / "source")
    write_source(source)
    config = tiny_config(tmp_path, source, train={"pretrain_epochs": 3})
    recluster(config=config, run_date=RUN_DATE)
    day = DAYS[0]
    first = backfill(config=config, start=day, end=day)
    assert [r["status"] for r in first] == ["labelled"]
    again = backfill(config=config, start=day, end=day)
    assert [r["status"] for r in again] == ["skipped"]  # nothing changed: resume skips
    extra = make_rows(7, 10_000, seed=5)
    pq.write_table(_table(extra), os.path.join(source, f"ds={day}", "part-1.parquet"))
    rows = backfill(config=config, start=day, end=day)
    assert [r["status"] for r in rows] == ["labelled"], rows
    assert rows[0]["rows"] == 90 + 7
    assert "source changed" in rows[0]["detail"]
    assert len(partitioned.read_partition(config.labels_uri(), "ds", day)) == 97


def _snapshot_ids(day, cols):
    cols["id"] = cols["id"] - cols["id"].min()  # every day repeats the ids 0..89
    return cols


def test_daily_snapshot_tables_train_with_ids_unique_per_partition(tmp_path):
    """Snapshot tables (every day a full copy of the entities, ids repeating across days) could
    never train: ids had to be unique over the window. `validation.unique_ids: partition`
    checks them within each day; the default (`window`) still refuses repeats across days."""
    source = str(tmp_path / "source")
    write_source(source, mutate=_snapshot_ids)
    window = tiny_config(tmp_path, source, train={"pretrain_epochs": 3})
    with pytest.raises(DataError, match=r"expect_column_values_to_be_unique on column 'id'"):
        recluster(config=window, run_date=RUN_DATE)
    config = tiny_config(tmp_path, source, train={"pretrain_epochs": 3},
                         validation={"unique_ids": "partition"})
    result = recluster(config=config, run_date=RUN_DATE)
    assert result["labels"]["rows"] == 90
    labels = partitioned.read_partition(config.labels_uri(), "ds", RUN_DATE)
    assert sorted(labels["id"]) == list(range(90))


def test_ids_repeated_within_one_day_still_fail_per_partition(tmp_path):
    def repeat_within_the_night(day, cols):
        cols = _snapshot_ids(day, cols)
        if day == RUN_DATE:
            cols["id"][5] = cols["id"][6]
        return cols

    source = str(tmp_path / "source")
    write_source(source, mutate=repeat_within_the_night)
    config = tiny_config(tmp_path, source, train={"pretrain_epochs": 3},
                         validation={"unique_ids": "partition"})
    with pytest.raises(DataError, match=rf"column 'id'.*partition\(s\) ds={RUN_DATE}"):
        recluster(config=config, run_date=RUN_DATE)
