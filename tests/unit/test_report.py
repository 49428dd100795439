"""The run report against a real sqlite MLflow store: sections, pictures, escaping, missing
artifacts, finding the run, the atomic write, and logging it into the run."""

import datetime as dt
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from decflow.config import FeaturesConfig, PipelineConfig
from decflow.data.validation import ExpectationResult, ValidationResult
from decflow.errors import ConfigError
from decflow.insight import report
from decflow.insight.profiles import cluster_profiles
from decflow.registry.promotion import Gate, PromotionDecision

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EXPERIMENT = "decflow-report"
MODEL = "decflow-report-model"
K = 3
HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img"
FULL_DAY, FAILED_DAY = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
DATA_URI = '<img src="data:image/png;base64,'
_BUILT: dict = {}


def _figure(title: str) -> Figure:
    fig = Figure(figsize=(2, 1.5), dpi=50)
    fig.add_subplot().bar(range(K), [3, 5, 2])
    fig.suptitle(title)
    return fig


def _profiles() -> dict:
    """Real profiles of 30 rows in K clusters; one exemplar id is hostile text."""
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(K), 10)
    frame = pd.DataFrame({
        "id": [HOSTILE] + [f"row-{i}" for i in range(1, 30)],
        "x": ids * 3.0 + rng.normal(size=30),
        "colour": np.array(["red", "green", "blue"], dtype=object)[ids],
        "note": np.array(["apple pie", "banana split", "cherry tart"], dtype=object)[ids]})
    features = FeaturesConfig(numeric=["x"], categorical=["colour"], text=["note"])
    return cluster_profiles(frame, ids, np.full(30, 0.9), np.arange(30, dtype=float), features,
                            "id", K).to_dict()


def build_runs(tmp: Path) -> SimpleNamespace:
    """One store: a full recluster run (every artifact, 3 pictures of which one is not a PNG,
    a registered version holding `champion`), a newer failed one with nothing but its config,
    and a still newer backfill run that reports must skip."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=(tmp / "art").as_uri())
    t0 = 1_772_323_200_000  # 2026-03-01 00:00 UTC

    full = client.create_run(exp, start_time=t0, run_name=f"recluster-{FULL_DAY}", tags={
        "decflow.flow": "recluster", "decflow.run_date": FULL_DAY.isoformat(),
        "data.n_rows": "30", "prefect.flow_run_name": "nightly <1>",
        "prefect.flow_run_url": "http://127.0.0.1:4200/runs/flow-run/abc?x=1&y=2"}).info.run_id
    for key, value in {"zz_custom": 7.0, "nmi": 0.81, "acc": 0.9, "seconds_pretrain": 12.5,
                       "label_churn": 0.42, "labels_rows": 1234.0}.items():
        client.log_metric(full, key, value)
    client.log_text(full, "model:\n  n_clusters: 3\nnote: a < b & c\n", "config.yaml")
    validation = ValidationResult(False, 30, [
        ExpectationResult("expect_column_values_to_not_be_null", "x", True, "no nulls"),
        ExpectationResult("expect_column_values_to_be_between", "x", False,
                          f"2 values out of range {HOSTILE}", [{"id": 1, "value": 99}],
                          ["ds=2026-03-01"])])
    client.log_dict(full, validation.to_dict(), "validation/result.json")
    client.log_dict(full, {"reference_version": "1", "mapping": {"0": 1, "1": 0, "2": 2},
                           "kept": [2], "label_churn": 0.42, "label_churn_unaligned": 0.7,
                           "n_rows": 30, "n_clusters": K, "n_reference_clusters": K},
                    "alignment/cluster_ids.json")
    decision = PromotionDecision("promote", [
        Gate("nmi_vs_champion", 0.81, 0.7, True, "candidate 0.81 vs champion 0.72"),
        Gate("cluster_sizes", 0.1, 0.02, True)], candidate="2", champion="1", n_rows=30,
        notes=["a note"])
    client.log_dict(full, decision.to_dict(), "promotion/decision.json")
    client.log_dict(full, _profiles(), "profiles/cluster_profiles.json")
    client.log_dict(full, {"alerts": [f"label churn 0.42 > 0.3 {HOSTILE}"],
                           "label_churn": 0.42, "thresholds": {"label_churn": 0.3},
                           "exceeded": {"label_churn": True}}, "monitoring/drift.json")
    client.log_figure(full, _figure("sizes"), "plots/cluster_sizes.png")
    client.log_figure(full, _figure("custom"), "plots/extra/custom_thing.png")
    client.log_text(full, "not a picture", "plots/broken.png")
    client.set_terminated(full, "FINISHED", end_time=t0 + 95_000)

    client.create_registered_model(MODEL)
    mv = client.create_model_version(MODEL, source=f"{(tmp / 'art').as_uri()}/model",
                                     run_id=full, tags={"promotion.decision": "promote"})
    client.set_registered_model_alias(MODEL, "champion", mv.version)

    failed = client.create_run(exp, start_time=t0 + 86_400_000, tags={
        "decflow.flow": "recluster", "decflow.run_date": FAILED_DAY.isoformat(),
        "decflow.error": f"DataError: bad rows {HOSTILE}",
        "alignment.reference_version": "none"}).info.run_id
    client.log_text(failed, "model: {}\n", "config.yaml")
    client.set_terminated(failed, "FAILED", end_time=t0 + 86_400_000 + 4_000)

    backfill = client.create_run(exp, start_time=t0 + 2 * 86_400_000, tags={
        "decflow.flow": "backfill", "decflow.run_date": FAILED_DAY.isoformat()}).info.run_id
    client.set_terminated(backfill, "FINISHED")
    return SimpleNamespace(uri=uri, client=client, full=full, failed=failed, backfill=backfill,
                           version=mv.version, tmp=tmp)


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory) -> SimpleNamespace:
    """The store of ``build_runs``, made once per session (also used by the browser tests)."""
    if "runs" not in _BUILT:
        _BUILT["runs"] = build_runs(tmp_path_factory.mktemp("report-store"))
    return _BUILT["runs"]


@pytest.fixture(scope="session")
def full_page(report_runs) -> str:
    return report.render_report(report_runs.uri, report_runs.full)


@pytest.mark.slow  # an MLflow store (report_runs)
def test_full_report_has_one_row_per_cluster_and_every_picture(full_page):
    assert full_page.count('<tr class="cluster-row">') == K
    assert full_page.count(DATA_URI) == 2  # broken.png is not a PNG: named, not embedded
    assert "plots/broken.png" not in full_page and "not a PNG file" in full_page
    sizes = full_page.index("<figcaption>Cluster sizes</figcaption>")
    assert sizes < full_page.index("<figcaption>extra/custom_thing.png</figcaption>")
    assert full_page.startswith("<!DOCTYPE html>") and full_page.rstrip().endswith("</html>")


@pytest.mark.slow  # an MLflow store (report_runs)
def test_full_report_sections(full_page, report_runs):
    metrics = full_page[full_page.index('id="metrics"'):full_page.index('id="promotion"')]
    order = [metrics.index(f"<td>{m}</td>") for m in ("acc", "nmi", "label_churn",
                                                      "seconds_pretrain", "zz_custom")]
    assert order == sorted(order)  # known quality metrics first, then by name
    assert "nmi_vs_champion" in full_page and "version 2 promoted over champion 1" in full_page
    assert f"{MODEL} version {report_runs.version} (champion)" in full_page
    assert '<div class="banner alert" role="alert"><strong>Drift alert (1):' in full_page
    assert "expect_column_values_to_be_between" in full_page and "ds=2026-03-01" in full_page
    assert "1 min 35 s" in full_page  # duration
    assert "<tr><th>Labels written (rows)</th><td>1234</td></tr>" in full_page
    assert '<a href="http://127.0.0.1:4200/runs/flow-run/abc?x=1&amp;y=2">nightly &lt;1&gt;</a>' \
        in full_page
    assert "a &lt; b &amp; c" in full_page  # config.yaml, escaped
    assert "not recorded for this run" not in full_page


@pytest.mark.slow  # an MLflow store (report_runs)
def test_text_from_the_run_is_escaped(full_page, report_runs):
    failed_page = report.render_report(report_runs.uri, report_runs.failed)
    for page in (full_page, failed_page):
        assert HOSTILE not in page and "<script" not in page and "<img src=x" not in page
        assert ESCAPED in page
    assert full_page.count(ESCAPED) >= 3  # validation detail, drift alert, exemplar id


@pytest.mark.slow  # an MLflow store (report_runs)
def test_missing_artifacts_are_named_not_fatal(report_runs):
    page = report.render_report(report_runs.uri, report_runs.failed)
    for path in ("validation/result.json", "promotion/decision.json", "monitoring/drift.json",
                 "profiles/cluster_profiles.json"):
        assert f"{path}: not recorded for this run" in page
    assert "no champion to align with (first night)" in page
    assert "no pictures (plots/*.png) recorded for this run" in page
    assert "no registered model version from this run" in page
    assert "The run failed:" in page and "FAILED" in page
    assert page.count('<tr class="cluster-row">') == 0 and DATA_URI not in page


@pytest.mark.slow  # an MLflow store (report_runs)
def test_page_is_self_contained(full_page):
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', full_page))
    assert re.findall(r"<link [^>]*>", full_page) == ['<link rel="icon" href="data:,">']
    assert "<script" not in full_page and "url(" not in full_page and "@import" not in full_page
    assert "default-src 'none'" in full_page  # the browser enforces it too


@pytest.mark.slow  # an MLflow store (report_runs)
def test_find_run_by_id_date_and_newest(report_runs):
    uri = report_runs.uri
    assert report.find_run(uri, EXPERIMENT).info.run_id == report_runs.failed  # not backfill
    assert report.find_run(uri, EXPERIMENT, run_date=FULL_DAY).info.run_id == report_runs.full
    assert report.find_run(uri, "whatever", run_id=report_runs.full).info.run_id == \
        report_runs.full


@pytest.mark.slow  # an MLflow store (report_runs)
def test_find_run_says_what_it_searched(report_runs):
    uri = report_runs.uri
    with pytest.raises(ConfigError, match=r"no recluster run for run date 2026-02-01 in "
                                          r"experiment 'decflow-report'.*decflow.run_date"):
        report.find_run(uri, EXPERIMENT, run_date=dt.date(2026, 2, 1))
    with pytest.raises(ConfigError, match="no MLflow experiment 'nope'"):
        report.find_run(uri, "nope")
    with pytest.raises(ConfigError, match="no MLflow run with id 'f00d'"):
        report.find_run(uri, EXPERIMENT, run_id="f00d")
    with pytest.raises(ConfigError, match="not both"):
        report.find_run(uri, EXPERIMENT, run_id=report_runs.full, run_date=FULL_DAY)


@pytest.mark.slow  # an MLflow store (report_runs)
def test_write_report_is_atomic(report_runs, tmp_path, monkeypatch):
    out = tmp_path / "reports" / "night.html"
    assert report.write_report(report_runs.uri, EXPERIMENT, out, run_date=FULL_DAY) == out
    first = out.read_text(encoding="utf-8")
    assert first.count('<tr class="cluster-row">') == K
    assert [p.name for p in out.parent.iterdir()] == ["night.html"]

    def broken(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report.os, "replace", broken)  # fails after the temp file was written
    with pytest.raises(RuntimeError, match="render failed"):
        report.write_report(report_runs.uri, EXPERIMENT, out, run_id=report_runs.failed)
    assert out.read_text(encoding="utf-8") == first  # the old report, whole
    assert [p.name for p in out.parent.iterdir()] == ["night.html"]  # no temp file left


@pytest.mark.slow  # an MLflow store (report_runs)
def test_report_command_and_log_report(report_runs, tmp_path):
    from decflow.insight.report import log_report, report_command

    config = PipelineConfig(home=str(tmp_path / "home"),
                            registry={"tracking_uri": report_runs.uri, "experiment": EXPERIMENT})
    path = report_command(config, run_date=FULL_DAY, run_id=None, out=None)
    assert path == tmp_path / "home" / "reports" / f"recluster-{FULL_DAY}.html"
    assert path.read_text(encoding="utf-8").count('<tr class="cluster-row">') == K

    uri = log_report(config, report_runs.failed)
    assert uri.endswith(f"/{report_runs.failed}/artifacts/report/report.html")
    logged = report_runs.client.download_artifacts(report_runs.failed, "report/report.html",
                                                   str(tmp_path))
    assert "The run failed:" in Path(logged).read_text(encoding="utf-8")


def test_profile_columns_without_content_are_left_out():
    clusters = [{"cluster_id": i, "size": 5, "share": 0.5, "mean_confidence": 0.9,
                 "numeric": [{"feature": "x", "value": 1.5}], "categories": [], "terms": [],
                 "exemplars": [1, 2], "labels": []} for i in range(2)]
    table = report._profiles({"n_rows": 10, "n_clusters": 2, "clusters": clusters})
    assert table.count('<tr class="cluster-row">') == 2
    assert "distinguishing features" in table and "exemplar ids" in table
    for absent in ("over-represented categories", "top terms", "most common label"):
        assert absent not in table
    clusters[1]["labels"] = [{"value": 7, "count": 5, "share": 1.0}]
    with_label = report._profiles({"n_rows": 10, "n_clusters": 2, "clusters": clusters})
    assert "<th>most common label</th>" in with_label and "7 (100%)" in with_label
