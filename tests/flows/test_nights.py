"""Several nights of the nightly flow: drift and churn logged per night, the size-shift
threshold marking the night whose clusters moved (green, tagged, warned), `decflow history`."""

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from decflow.data import partitioned
from flowkit import RUN_DATE, latest_artifact, make_rows, tiny_config
from decflow.flows.cli import app
from decflow.flows.recluster import recluster

NIGHTS = [RUN_DATE - dt.timedelta(days=i) for i in (2, 1, 0)]
SOURCE_DAYS = [RUN_DATE - dt.timedelta(days=i) for i in (4, 3, 2, 1, 0)]
MAX_SIZE_SHIFT = 0.15


def _write_source(uri: str) -> None:
    """Five days of the four blobs; on the last night blob 3 is gone (its share 1/4 -> 0)."""
    for i, day in enumerate(SOURCE_DAYS):
        cols = make_rows(120, i * 1000, seed=i)
        if day == RUN_DATE:
            keep = cols["truth"] != 3
            cols = {k: (np.asarray(v)[keep] if k != "emb" else [e for e, m in zip(v, keep) if m])
                    for k, v in cols.items()}
        arrays = {k: (pa.array([list(map(float, e)) for e in v], pa.list_(pa.float32()))
                      if k == "emb" else pa.array(v)) for k, v in cols.items()}
        partitioned.write_partition(uri, "ds", day, pa.table(arrays))


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    source = str(home / "source")
    _write_source(source)
    config = tiny_config(home, source, monitoring={"max_size_shift": MAX_SIZE_SHIFT})
    results = [recluster(config=config, run_date=night) for night in NIGHTS]
    return config, results


def _drift_json(config, run_id) -> dict:
    client = MlflowClient(config.tracking_uri())
    path = client.download_artifacts(run_id, "monitoring/drift.json")
    with open(path) as fh:
        return json.load(fh)


def test_each_night_logs_churn_and_size_shift_against_the_night_before(nights):
    config, (first, second, third) = nights
    client = MlflowClient(config.tracking_uri())
    # The first night has nothing to compare with: no champion, no earlier labels.
    assert first["drift"]["previous_date"] is None and first["drift"]["label_churn"] is None
    assert "size_shift_tvd" not in client.get_run(first["run_id"]).data.metrics
    # Later nights compare with the night before, from the labels partitions themselves.
    for result, night in ((second, NIGHTS[1]), (third, NIGHTS[2])):
        drift = _drift_json(config, result["run_id"])
        assert drift["previous_date"] == str(night - dt.timedelta(days=1))
        before = partitioned.read_partition(config.labels_uri(), "ds", night - dt.timedelta(days=1))
        after = partitioned.read_partition(config.labels_uri(), "ds", night)
        expected = 0.5 * np.abs(np.bincount(after["cluster_id"], minlength=4) / len(after)
                                - np.bincount(before["cluster_id"], minlength=4)
                                / len(before)).sum()
        metrics = client.get_run(result["run_id"]).data.metrics
        assert metrics["size_shift_tvd"] == pytest.approx(expected)
        assert drift["size_shift_tvd"] == pytest.approx(expected)
        assert metrics["label_churn"] == pytest.approx(drift["label_churn"])
        assert metrics["labels_rows"] == len(after)
    # Blob 3 left on the last night: a quarter of the rows' share moved.
    assert _drift_json(config, third["run_id"])["size_shift_tvd"] > 0.2
    assert _drift_json(config, second["run_id"])["size_shift_tvd"] < MAX_SIZE_SHIFT


def test_a_night_past_the_size_shift_threshold_stays_green_tagged_and_warned(nights):
    config, (_, second, third) = nights
    client = MlflowClient(config.tracking_uri())
    quiet, moved = client.get_run(second["run_id"]), client.get_run(third["run_id"])
    assert quiet.data.tags["monitoring.alert"] == "false"
    assert moved.info.status == "FINISHED"  # green: labels written, run finished
    assert third["labels"]["rows"] == len(partitioned.read_partition(config.labels_uri(), "ds",
                                                                 RUN_DATE))
    assert moved.data.tags["monitoring.alert"] == "true"
    assert "exceeds monitoring.max_size_shift 0.15" in moved.data.tags["monitoring.alerts"]
    assert moved.data.metrics["drift_alert"] == 1.0 and quiet.data.metrics["drift_alert"] == 0.0
    version = client.get_model_version(config.registry.model_name, third["model_version"])
    assert version.tags["monitoring.alert"] == "true"
    assert "monitoring.alert" not in client.get_model_version(
        config.registry.model_name, second["model_version"]).tags
    assert "exceeds monitoring.max_size_shift" in latest_artifact("drift-warning")
    artifacts = {a.path for a in client.list_artifacts(third["run_id"], "plots")}
    assert {"plots/sizes_vs_last_night.png", "plots/drift_history.png",
            "plots/confidence.png", "plots/embedding_2d.png"} <= artifacts


def test_history_prints_every_night_and_writes_the_chart(nights, tmp_path, monkeypatch):
    config, results = nights
    path = tmp_path / "config.yaml"
    from decflow.config import dump_config

    path.write_text(dump_config(config))
    out = CliRunner().invoke(app, ["history", "--config", str(path), "--out-dir",
                                   str(tmp_path / "h")])
    assert out.exit_code == 0, out.output
    for night in NIGHTS:
        assert str(night) in out.output
    assert "ALERT" in out.output
    import pandas as pd

    table = pd.read_csv(tmp_path / "h" / "history.csv", dtype={"model_version": str,
                                                               "champion_version": str})
    assert table["run_date"].tolist() == [str(n) for n in NIGHTS]
    assert table["run_id"].tolist() == [r["run_id"] for r in results]
    assert table["alert"].tolist() == [False, False, True]
    assert table["model_version"].tolist() == ["1", "2", "3"]
    assert (tmp_path / "h" / "drift_history.png").read_bytes()[:4] == b"\x89PNG"
    # --days counts nights back from the newest.
    two = CliRunner().invoke(app, ["history", "--config", str(path), "--days", "2", "--out-dir",
                                   str(tmp_path / "h2")])
    assert two.exit_code == 0, two.output
    assert str(NIGHTS[0]) not in two.output and str(NIGHTS[1]) in two.output


def test_report_of_the_last_night_in_a_browser(nights, tmp_path):
    import browser

    browser.require_chromium()
    config, results = nights
    path = tmp_path / "config.yaml"
    from decflow.config import dump_config

    path.write_text(dump_config(config))
    out = CliRunner().invoke(app, ["report", "--config", str(path), "--run-date", str(RUN_DATE),
                                   "--out", str(tmp_path / "night.html")])
    assert out.exit_code == 0, out.output
    assert f"run report: {tmp_path / 'night.html'}" in out.output

    view = browser.open_page(tmp_path / "night.html")

    assert view.console_errors == [] and view.page_errors == [] and view.requests == []
    assert view.n_cluster_rows == 4
    assert len(view.images) == 6  # curves, sizes, UMAP map, confidence, vs last night, drift
    assert all(src.startswith("data:image/png;base64,") and width > 0
               for src, width in view.images), view.images
    assert "exceeds monitoring.max_size_shift" in view.text
    # The copy the flow wrote as its last step, and the one in MLflow.
    assert results[-1]["report"]["path"].endswith(f"reports/recluster-{RUN_DATE}.html")
    client = MlflowClient(config.tracking_uri())
    assert "report/report.html" in {a.path for a in client.list_artifacts(results[-1]["run_id"],
                                                                          "report")}
