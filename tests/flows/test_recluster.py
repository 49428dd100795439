"""The recluster flow end to end: real sqlite MLflow store, real Dask LocalCluster, Prefect harness."""

import datetime as dt
import json
import os
import re

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
from prefect.exceptions import ParameterTypeError

from flowkit import (RUN_DATE, mlflow_client, run_artifacts, store_state, tiny_config,
                     write_source)
from decflow.data import partitioned, sources
from decflow.errors import DataError
from decflow.flows.recluster import recluster

LABEL_SCHEMA = {"id": "int64", "cluster_id": "int32", "confidence": "float", "distance": "float",
                "model_name": "string", "model_version": "string", "run_id": "string",
                "labeled_at": "timestamp[us, tz=UTC]"}


@pytest.fixture
def pipeline(first_night):
    """One successful run (the session's shared first night): tests inspect it and try bad data
    against it; the rerun test builds its own."""
    return first_night.config, first_night.result


@pytest.fixture
def own_pipeline(tmp_path):
    """One successful run of the tiny config on a home of this test's own (it reruns it)."""
    home = tmp_path / "home"
    source = str(home / "source")
    write_source(source)
    config = tiny_config(home, source)
    return config, recluster(config=config, run_date=RUN_DATE)


def test_labels_partition_has_one_row_per_source_row_with_the_schema(pipeline):
    config, result = pipeline
    source, _ = sources.load_window(config.source, RUN_DATE, 1)
    path = os.path.join(config.labels_uri(), f"ds={RUN_DATE}", "part-0.parquet")
    table = pq.read_table(path)
    assert {f.name: str(f.type) for f in table.schema} == LABEL_SCHEMA
    labels = table.to_pandas()
    assert len(labels) == len(source) == 90
    assert sorted(labels["id"]) == sorted(source["id"])
    assert labels["model_version"].unique().tolist() == ["1"]
    assert labels["run_id"].unique().tolist() == [result["run_id"]]
    assert ((labels["confidence"] > 0) & (labels["confidence"] <= 1)).all()
    # Only the run date is labelled.
    assert os.listdir(config.labels_uri()) == [f"ds={RUN_DATE}"]


def test_registered_version_has_both_aliases_and_the_run_is_tracked(pipeline):
    config, result = pipeline
    client = mlflow_client(config)
    mv = client.get_model_version_by_alias("tiny", "champion")
    assert str(mv.version) == "1"
    assert str(client.get_model_version_by_alias("tiny", "challenger").version) == "1"
    assert mv.run_id == result["run_id"]
    assert mv.tags["data.n_rows"] == "270" and mv.tags["validation.success"] == "True"
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.n_clusters"] == "4"
    assert {"acc", "silhouette", "mean_confidence", "smallest_cluster_share", "kl"} <= \
        set(run.data.metrics)
    assert len(client.get_metric_history(result["run_id"], "pretrain_loss")) == 10
    artifacts = {a.path for a in client.list_artifacts(result["run_id"], "plots")}
    assert {"plots/training_curves.png", "plots/cluster_sizes.png",
            "plots/embedding_2d.png"} <= artifacts
    assert result["metrics"]["acc"] > 0.9  # four well-separated blobs
    # every column shares the blobs: full weight each, logged with its relevance
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("feature_weight.")} == {
        "feature_weight.x": 1.0, "feature_weight.c": 1.0, "feature_weight.emb": 1.0}
    with open(client.download_artifacts(result["run_id"], "features/column_weights.json")) as f:
        weights = json.load(f)
    assert weights["column_weighting"] == "relevance"
    assert set(weights["columns"]) == {"x", "c", "emb"}
    assert all(w["relevance"] > 0.3 for w in weights["columns"].values())


def test_the_run_records_its_window_and_labels_as_datasets_and_the_machines_load(pipeline):
    config, result = pipeline
    run = mlflow_client(config).get_run(result["run_id"])
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "labels (written)"}
    window, labels = inputs["training"], inputs["labels (written)"]
    days = [(RUN_DATE - dt.timedelta(days=d)).isoformat() for d in (2, 1, 0)]
    assert window.name == f"source {days[0]}..{days[-1]}"
    assert window.source_type == "local"
    assert json.loads(window.source)["uri"].endswith("/source")  # its location, no rows
    assert json.loads(window.profile)["num_rows"] == 270
    assert json.loads(window.profile)["partitions"] == days
    assert window.digest == mv_tag(config, "data.digest")[:16]
    assert labels.name == f"labels {RUN_DATE}"
    assert json.loads(labels.profile) == {"num_rows": 90, "model": "tiny", "model_version": "1"}
    assert json.loads(labels.source)["uri"] == result["labels"]["path"]
    # the machine's load while it trained (tiny_config samples every second)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= \
        set(run.data.metrics), sorted(run.data.metrics)


def mv_tag(config, key: str) -> str:
    return mlflow_client(config).get_model_version("tiny", "1").tags[key]


def test_cluster_profiles_name_what_each_cluster_is(pipeline, tmp_path):
    """The four blobs differ in x (3 per blob) and in c (one letter per blob): each cluster's
    profile names x first and over-represents one letter, logged to MLflow in four forms,
    pointed at by the version and given to the Prefect run."""
    import pandas as pd

    config, result = pipeline
    client = mlflow_client(config)
    run_id = result["run_id"]
    flow_run_id = client.get_run(run_id).data.tags["prefect.flow_run_id"]
    files = {a.path for a in client.list_artifacts(run_id, "profiles")}
    assert files == {f"profiles/cluster_profiles.{ext}" for ext in ("json", "parquet", "md",
                                                                      "html")}
    mv = client.get_model_version("tiny", result["model_version"])
    assert mv.tags["profiles.artifact"] == f"runs:/{run_id}/profiles/cluster_profiles.json"
    local = mlflow.artifacts.download_artifacts(mv.tags["profiles.artifact"],
                                                dst_path=str(tmp_path),
                                                tracking_uri=config.tracking_uri())
    prof = json.loads(open(local).read())
    clusters = prof["clusters"]
    assert [c["cluster_id"] for c in clusters] == [0, 1, 2, 3]
    assert sum(c["size"] for c in clusters) == prof["n_rows"] == 270
    letters = {}
    for c in clusters:
        values = [abs(f["value"]) for f in c["numeric"]]
        assert values == sorted(values, reverse=True) and values[0] > 1
        assert {f["feature"] for f in c["numeric"]} <= {"x", *(f"emb[{i}]" for i in range(8))}
        top = [g for g in c["categories"] if g["column"] == "c"][0]
        assert top["lift"] > 2.5 and top["share_in"] > 0.9
        letters[top["category"]] = {f["feature"]: f["value"] for f in c["numeric"]}
        # The label column (truth = the blob) names the blob: the same one as the letter.
        assert c["labels"][0]["value"] == "abcd".index(top["category"])
        assert c["labels"][0]["share"] > 0.9
        assert len(c["exemplars"]) == 5 and 0 < c["mean_confidence"] <= 1
    assert set(letters) == set("abcd")  # each cluster is one blob
    # x is 3 x the blob's index: lowest in blob a, highest in blob d
    assert letters["a"]["x"] < 0 < letters["d"]["x"]
    parquet = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/profiles/"
                                                  f"cluster_profiles.parquet",
                                                  dst_path=str(tmp_path / "pq"),
                                                  tracking_uri=config.tracking_uri())
    assert len(pd.read_parquet(parquet)) == 4
    table = json.loads(run_artifacts(flow_run_id)["cluster-profiles"].data)
    assert [row["cluster"] for row in table] == [0, 1, 2, 3]
    assert [row["sets it apart"].split(" ")[0] for row in table] == [
        c["numeric"][0]["feature"] for c in clusters]
    assert [row["most common label"].split(" ")[0] for row in table] == [
        str(c["labels"][0]["value"]) for c in clusters]


def test_champion_pyfunc_reproduces_the_written_labels(pipeline, monkeypatch):
    config, _ = pipeline
    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.tracking_uri())
    model = mlflow.pyfunc.load_model("models:/tiny@champion")
    source, _ = sources.load_window(config.source, RUN_DATE, 1)
    features = source[config.features.columns()]
    predicted = model.predict(features)
    labels = partitioned.read_partition(config.labels_uri(), "ds", RUN_DATE)
    merged = source[["id"]].assign(expected=predicted["cluster_id"].to_numpy()).merge(labels)
    assert len(merged) == len(source)
    np.testing.assert_array_equal(merged["expected"], merged["cluster_id"])


def test_rerun_replaces_labels_gates_the_challenger_and_keeps_cluster_ids(own_pipeline):
    config, first = own_pipeline
    assert first["promotion"]["decision"] == "promote"  # the first version ever, judged alone
    second = recluster(config=config, run_date=RUN_DATE)
    labels = partitioned.read_dataset(config.labels_uri(), "ds")
    assert len(labels) == 90 and labels["id"].is_unique
    assert second["model_version"] == "2"
    client = mlflow_client(config)
    v2 = client.get_model_version("tiny", "2")
    # The nightly gate ran on version 2 (as good as version 1 on the same window: promoted)
    # and the aliases follow its decision.
    assert second["promotion"]["decision"] == v2.tags["promotion.decision"] == "promote"
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("tiny", "challenger").version) == "2"
    assert str(client.get_model_version_by_alias("tiny", "previous").version) == "1"
    assert labels["model_version"].unique().tolist() == ["2"]  # written with the champion
    # The second run warm-started from the champion's autoencoder (same feature schema).
    run = client.get_run(second["run_id"])
    assert run.data.tags["decflow.warm_start"] == "True"
    # Cluster ids carried over from version 1: few rows changed id, and the mapping is kept.
    assert run.data.metrics["label_churn"] < 0.1
    assert run.data.metrics["label_churn"] <= run.data.metrics["label_churn_unaligned"]
    assert v2.tags["alignment.reference_version"] == "1"
    assert sorted(json.loads(v2.tags["alignment.mapping"]).values()) == [0, 1, 2, 3]


def _missing_column(day, cols):
    cols.pop("x")
    return cols


def _nan_numeric(day, cols):
    if day == RUN_DATE:
        cols["x"][3] = np.nan
    return cols


def _duplicate_ids(day, cols):
    if day == RUN_DATE:
        cols["id"][5] = cols["id"][6]
    return cols


def _wrong_vector_length(day, cols):
    if day == RUN_DATE:
        cols["emb"][7] = cols["emb"][7][:5]
    return cols


def _empty_partition(day, cols):
    if day == RUN_DATE:
        cols = {k: v[:0] for k, v in cols.items()}
    return cols


@pytest.mark.parametrize("mutate, window, expected", [
    (_missing_column, 3, r"expect_column_to_exist on column 'x'"),
    (_nan_numeric, 3, r"expect_column_values_to_not_be_null on column 'x'"),
    (_duplicate_ids, 3, r"expect_column_values_to_be_unique on column 'id'"),
    (_wrong_vector_length, 3, r"column 'emb'.*length 8.*5"),
    # an empty night fails before validation runs (nothing to label: the labels are kept)
    (_empty_partition, 1, r"source partition ds=2026-11-21 has no rows"),
], ids=["missing-column", "nan-numeric", "duplicate-ids", "wrong-vector-length",
        "empty-partition"])
def test_bad_input_fails_at_validation_and_changes_nothing(pipeline, tmp_path, mutate, window,
                                                           expected):
    config, _ = pipeline
    bad_source = str(tmp_path / "bad")
    write_source(bad_source, mutate=mutate)
    bad = config.model_copy(update={"source": config.source.model_copy(
        update={"uri": bad_source, "window_days": window})})
    before = store_state(config)
    with pytest.raises(DataError, match=expected):
        recluster(config=bad, run_date=RUN_DATE)
    assert store_state(config) == before
    failed = mlflow_client(config).search_runs(
        [mlflow_client(config).get_experiment_by_name("decflow").experiment_id],
        order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert failed.info.status == "FAILED"
    assert re.search(expected, failed.data.tags["decflow.error"])


def test_flow_validates_its_config_parameter():
    params = recluster.validate_parameters({"config": {"model": {"n_clusters": 5}},
                                            "run_date": "2026-11-21"})
    assert params["config"].model.n_clusters == 5
    assert str(params["run_date"]) == "2026-11-21"
    with pytest.raises(ParameterTypeError, match=r"config\.model\.n_clusterz: Extra inputs"):
        recluster.validate_parameters({"config": {"model": {"n_clusterz": 5}}})


def test_views_of_a_sample_still_label_every_row(tmp_path):
    """``model.init_view_rows`` below the 270 training rows: the views and the Dask k-means
    see 100 rows, the chosen view places the other 170, and every row is labelled."""
    home = tmp_path / "home"
    source = str(home / "source")
    write_source(source)
    config = tiny_config(home, source, model={"init_view_rows": 100})
    result = recluster(config=config, run_date=RUN_DATE)
    run = mlflow_client(config).get_run(result["run_id"])
    assert run.data.metrics["init_view_rows"] == 100
    assert result["metrics"]["acc"] > 0.9  # four well-separated blobs
    labels = pq.read_table(os.path.join(config.labels_uri(), f"ds={RUN_DATE}",
                                        "part-0.parquet")).to_pandas()
    assert len(labels) == 90 and labels["cluster_id"].nunique() == 4
