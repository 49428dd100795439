"""Drift numbers, thresholds and the night history read back from MLflow."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from decflow.insight import monitoring


def test_size_shift_is_total_variation_and_psi():
    before, after = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.5, 0.25])
    shift = monitoring.size_shift(before, after)
    assert shift["tvd"] == pytest.approx(0.25)
    eps = monitoring.PSI_EPSILON
    assert shift["psi"] == pytest.approx((0.25 - 0.5) * math.log(0.25 / 0.5)
                                         + (0.25 - eps) * math.log(0.25 / eps))
    assert monitoring.size_shift(before, before) == {"tvd": 0.0, "psi": 0.0}
    with pytest.raises(ValueError, match=r"differ in length: \(3,\) vs \(2,\)"):
        monitoring.size_shift(before, after[:2])


def test_shares_fill_missing_ids_and_reject_foreign_ones():
    np.testing.assert_allclose(monitoring.shares({0: 3, 2: 1}, 3), [0.75, 0, 0.25])
    with pytest.raises(ValueError, match=r"cluster id 3 outside 0\.\.2"):
        monitoring.shares({0: 1, 3: 1}, 3)
    with pytest.raises(ValueError, match="no rows"):
        monitoring.shares({}, 3)


def test_report_alerts_only_above_each_threshold():
    kw = dict(previous_date="2026-11-20", previous_sizes={0: 50, 1: 50})
    calm = monitoring.measure_drift("2026-11-21", {0: 45, 1: 55}, 2, label_churn=0.05,
                                   max_churn=0.1, max_size_shift=0.1, **kw)
    assert calm.size_shift_tvd == pytest.approx(0.05) and not calm.alert
    assert calm.sizes == [45, 55] and calm.previous_sizes == [50, 50]
    churned = monitoring.measure_drift("2026-11-21", {0: 45, 1: 55}, 2, label_churn=0.3,
                                      max_churn=0.1, max_size_shift=0.1, **kw)
    assert churned.alerts == ["label churn 0.300 exceeds monitoring.max_churn 0.1"]
    moved = monitoring.measure_drift("2026-11-21", {0: 90, 1: 10}, 2, label_churn=0.0,
                                    max_churn=0.1, max_size_shift=0.1, **kw)
    assert moved.alerts == ["cluster-size shift 0.400 (TVD vs 2026-11-20) exceeds "
                            "monitoring.max_size_shift 0.1"]
    assert moved.metrics() == {"size_shift_tvd": pytest.approx(0.4),
                               "size_shift_psi": pytest.approx(moved.size_shift_psi),
                               "drift_alert": 1.0}
    # No thresholds configured: numbers only, never an alert.
    assert not monitoring.measure_drift("2026-11-21", {0: 90, 1: 10}, 2, label_churn=0.9,
                                       **kw).alert
    # A first night: nothing to compare with, NaN churn (no champion) is "not measured".
    first = monitoring.measure_drift("2026-11-21", {0: 9, 1: 1}, 2, label_churn=math.nan,
                                    max_churn=0.0, max_size_shift=0.0)
    assert first.label_churn is None and first.size_shift_tvd is None and not first.alert
    assert first.metrics() == {"drift_alert": 0.0}
    assert "no earlier night" in first.to_markdown()
    assert "**alert**" in moved.to_markdown() and "within thresholds" in calm.to_markdown()


def test_pictures_are_figures(tmp_path):
    report = monitoring.measure_drift("2026-11-21", {0: 90, 1: 10}, 2, previous_date="2026-11-20",
                                     previous_sizes={0: 50, 1: 50})
    sizes = monitoring.plot_sizes_vs_last_night(report)
    assert len(sizes.axes[0].patches) == 4  # two nights x two clusters
    assert "shift 0.400 (TVD)" in sizes.axes[0].get_title()
    empty = monitoring.plot_history(pd.DataFrame(columns=monitoring.HISTORY_COLUMNS))
    assert empty.axes[0].texts[0].get_text() == "no nights recorded"
    # The first night has no champion and no earlier night: no point to draw, so say why.
    first = pd.DataFrame([{**{c: float("nan") for c in monitoring.HISTORY_COLUMNS},
                           "run_date": "2026-11-21", "status": "FINISHED", "alert": False}])
    lone = monitoring.plot_history(first, max_churn=0.2)
    assert [t.get_text() for t in lone.axes[0].texts] == [monitoring.NOTHING_TO_COMPARE]
    assert [t.get_text() for t in lone.axes[0].get_xticklabels()] == ["2026-11-21"]
    for fig in (sizes, empty, lone):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / "f.png", dpi=40)


def _run(client, exp, night, status, metrics=None, **tags):
    run = client.create_run(exp, tags={"decflow.flow": "recluster", "decflow.run_date": night,
                                       **tags})
    for k, v in (metrics or {}).items():
        client.log_metric(run.info.run_id, k, v)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.mark.slow  # an MLflow store
def test_history_takes_the_run_whose_labels_stand_for_each_night(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("nightly", artifact_location=str(tmp_path / "art"))
    a = _run(client, exp, "2026-11-19", "FINISHED", {"label_churn": 0.1, "size_shift_tvd": 0.02},
             **{"decflow.model_version": "1", "monitoring.alert": "false"})
    b_ok = _run(client, exp, "2026-11-20", "FINISHED", {"size_shift_tvd": 0.3},
                **{"monitoring.alert": "true"})
    _run(client, exp, "2026-11-20", "FAILED")  # a later failed rerun: the labels of b_ok stand
    c_failed = _run(client, exp, "2026-11-21", "FAILED")
    d_now = _run(client, exp, "2026-11-22", "RUNNING")
    d_earlier = _run(client, exp, "2026-11-22", "FINISHED")
    client.create_run(exp, tags={"decflow.flow": "score", "decflow.run_date": "2026-11-22"})

    frame = monitoring.history(uri, "nightly", current_run_id=d_now)
    assert frame["run_date"].tolist() == ["2026-11-19", "2026-11-20", "2026-11-21",
                                          "2026-11-22"]
    assert frame["run_id"].tolist() == [a, b_ok, c_failed, d_now]
    assert frame["status"].tolist() == ["FINISHED", "FINISHED", "FAILED", "RUNNING (this run)"]
    assert frame["alert"].tolist() == [False, True, False, False]
    assert frame["model_version"].iloc[0] == "1"
    assert frame["label_churn"].iloc[0] == pytest.approx(0.1)
    assert math.isnan(frame["label_churn"].iloc[1])
    # Without a current run the finished run of 2026-11-22 stands.
    assert monitoring.history(uri, "nightly")["run_id"].iloc[-1] == d_earlier
    # days counts back from the newest night (or from `end`).
    assert monitoring.history(uri, "nightly", days=2)["run_date"].tolist() == [
        "2026-11-21", "2026-11-22"]
    assert monitoring.history(uri, "nightly", days=2, end="2026-11-20")["run_date"].tolist() \
        == ["2026-11-19", "2026-11-20"]
    assert monitoring.history(uri, "no-such-experiment").empty
    table = monitoring.history_markdown(frame)
    assert table.count("\n") == 2 + 4 and "| 2026-11-20 | FINISHED |" in table
    fig = monitoring.plot_history(frame, max_churn=0.2, max_size_shift=0.1)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == frame["run_date"].tolist()
