"""Promotion policy (pure gates) and registry alias moves against a real sqlite store."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from decflow import DeepEmbeddedClustering, DegenerateClusterWarning
from decflow.config import FeaturesConfig, PromotionConfig
from decflow.errors import Conflict
from decflow.model.features import FeatureEncoder
from decflow.registry import aliases as registry
from decflow.registry.promotion import (ReferenceScores, compare_models, evaluate_gates,
                                        reference_sample, score_reference, size_gate)
from testkit import DEC_FAST_KMEANS

POLICY = PromotionConfig()


def scores(labels, silhouette=0.6, confidence=0.9, k=4) -> ReferenceScores:
    labels = np.asarray(labels, dtype=np.int64)
    return ReferenceScores(labels, np.full(len(labels), confidence), silhouette, k)


EVEN = np.tile(np.arange(4), 50)  # 200 rows, 50 per cluster


def gates(decision):
    return {g.name: g for g in decision.gates}


def test_non_inferior_challenger_is_promoted_and_every_gate_is_reported():
    d = evaluate_gates(scores(EVEN), scores(EVEN, 0.58, 0.88), POLICY, validation_success=True,
                       candidate_version="2", champion_version="1")
    assert d.promote and d.decision == "promote" and not d.failed
    assert list(gates(d)) == ["validation", "cluster_sizes", "silhouette", "confidence",
                              "agreement_ari"]
    assert gates(d)["silhouette"].threshold == pytest.approx(0.55)
    assert gates(d)["agreement_ari"].value == pytest.approx(1.0)
    tags = d.to_tags()
    assert tags["promotion.decision"] == "promote"
    assert tags["promotion.champion_version"] == "1"
    assert tags["promotion.gate.silhouette"].startswith("pass value=0.58 threshold=0.55")
    assert tags["promotion.gate.agreement_ari"].startswith("pass value=1 threshold=none")
    assert tags["promotion.failed_gates"] == "none"
    assert "| silhouette | pass | 0.58 | 0.55 |" in d.to_markdown()
    assert d.summary() == "version 2 promoted over champion 1: all 5 gates passed"


def test_collapsed_challenger_fails_sizes_and_silhouette():
    collapsed = scores(np.zeros(200), math.nan, 0.25)
    d = evaluate_gates(scores(EVEN), collapsed, POLICY, validation_success=True,
                       candidate_version="2", champion_version="1")
    assert d.decision == "reject" and not d.promote
    assert {g.name for g in d.failed} == {"cluster_sizes", "silhouette", "confidence"}
    assert "3 of 4 clusters empty" in gates(d)["cluster_sizes"].detail
    assert d.to_tags()["promotion.gate.cluster_sizes"].startswith(
        "fail value=0 threshold=2 (on 200 reference rows")
    assert d.to_tags()["promotion.failed_gates"] == "cluster_sizes,silhouette,confidence"
    assert d.summary().startswith("version 2 rejected, champion 1 stays: failed cluster_sizes")


def test_small_cluster_passes_by_default_and_fails_an_explicit_ratio_floor():
    labels = np.concatenate([np.repeat([0, 1, 2], 60), np.full(20, 3)])  # share 0.1
    d = evaluate_gates(None, scores(labels), POLICY, validation_success=True)
    assert d.promote
    assert gates(d)["comparison"].detail.startswith("no champion to compare with")
    strict = evaluate_gates(None, scores(labels), PromotionConfig(min_cluster_ratio=0.5),
                            validation_success=True)  # 0.5 / 4 of 200 rows: 25
    assert [g.name for g in strict.failed] == ["cluster_sizes"]
    assert gates(strict)["cluster_sizes"].to_tag().startswith("fail value=20 threshold=25")
    assert "cluster 3 holds 20 rows, fewer than 25" in gates(strict)["cluster_sizes"].detail


# True class sizes of the labelled tabular sets (from their sources; the gate sees only sizes).
DRY_BEAN = [3546, 2636, 2027, 1928, 1630, 1322, 522]  # BOMBAY: 3.8% with k = 7
KDD_CUP_99 = [280790, 107201, 97278, 2203, 1589, 1247, 1040, 1020, 979, 264, 231, 53, 30, 21,
              20, 12, 10, 9, 8, 7, 4, 3, 2]  # 23 connection types, the rarest 2 of 494,021


@pytest.mark.parametrize("sizes", [DRY_BEAN, KDD_CUP_99], ids=["dry-bean", "kdd-cup-99"])
def test_the_default_size_gate_accepts_true_unbalanced_partitions(sizes):
    gate = size_gate(sizes, POLICY, "rows")
    assert gate.passed, gate.detail
    assert gate.value == min(sizes) and gate.threshold == 2


@pytest.mark.parametrize("sizes, problem", [
    ([500, 300, 0, 200], "1 of 4 clusters empty"),
    ([3546, 2636, 2027, 1928, 1630, 1322, 0], "1 of 7 clusters empty"),
    ([700, 299, 1], "cluster 2 holds 1 row, fewer than 2"),
    ([9990, 2, 2, 2, 2, 2], "collapsed: cluster 0 holds 99.9% of the rows, more than 99%"),
    ([1000, 0, 0, 0], "3 of 4 clusters empty"),
], ids=["empty", "empty-beside-true-sizes", "one-row", "collapsed-into-one", "all-in-one"])
def test_the_default_size_gate_refuses_empty_one_row_and_collapsed_clusters(sizes, problem):
    gate = size_gate(sizes, POLICY, "rows")
    assert not gate.passed
    assert problem in gate.detail


def test_the_size_gate_judges_the_training_sizes_when_the_model_carries_them():
    # 5 reference rows cannot show a 1% cluster; the 1,000 training rows do
    reference = ReferenceScores(np.array([0, 0, 1, 1, 0]), np.full(5, 0.9), 0.5, 3,
                                training_sizes=np.array([600, 390, 10]))
    d = evaluate_gates(None, reference, POLICY, validation_success=True)
    assert d.promote
    assert gates(d)["cluster_sizes"].detail.startswith("on 1000 training rows: smallest "
                                                       "cluster 2 10 rows (1.00%)")
    empty = ReferenceScores(reference.labels, reference.confidence, 0.5, 3,
                            training_sizes=np.array([600, 400, 0]))
    assert [g.name for g in evaluate_gates(None, empty, POLICY, validation_success=True).failed
            ] == ["cluster_sizes"]


def test_margins_validation_agreement_floor_and_supervised_gates():
    worse = evaluate_gates(scores(EVEN, 0.6, 0.9), scores(EVEN, 0.54, 0.84), POLICY,
                           validation_success=True)
    assert {g.name for g in worse.failed} == {"silhouette", "confidence"}
    unknown = evaluate_gates(scores(EVEN), scores(EVEN), POLICY)
    assert [g.name for g in unknown.failed] == ["validation"]
    reshuffled = np.tile(np.arange(4), 50)[np.random.default_rng(0).permutation(200)]
    floor = evaluate_gates(scores(EVEN), scores(reshuffled), PromotionConfig(
        min_agreement_ari=0.5), validation_success=True)
    assert [g.name for g in floor.failed] == ["agreement_ari"]
    y = pd.Series(EVEN.astype(float))
    y[:10] = np.nan  # rows without a label are left out
    supervised = evaluate_gates(scores(EVEN), scores(reshuffled), POLICY, y_true=y,
                                validation_success=True)
    assert {"acc", "nmi"} <= {g.name for g in supervised.failed}
    assert "190 rows" in gates(supervised)["acc"].detail
    assert gates(supervised)["acc"].threshold == pytest.approx(1 - POLICY.max_supervised_drop)


def test_candidate_that_is_the_champion_is_trivially_kept():
    d = evaluate_gates(scores(EVEN), scores(EVEN), POLICY, candidate_version="3",
                       champion_version="3")
    assert d.decision == "already_champion" and not d.promote
    assert [g.name for g in d.gates] == ["already_champion"]
    with pytest.raises(ValueError, match="same rows"):
        evaluate_gates(scores(EVEN[:10]), scores(EVEN), POLICY)


def test_score_reference_and_compare_models_on_a_fitted_model():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    frame = pd.DataFrame({"x": rng.normal(size=120) + 6 * y, "w": rng.normal(size=120) - 5 * y,
                          "truth": y})
    encoder = FeatureEncoder(FeaturesConfig(numeric=["x", "w"]))
    X = encoder.fit_transform(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateClusterWarning)
        est = DeepEmbeddedClustering(3, random_state=0, **DEC_FAST_KMEANS).fit(X)
    s = score_reference(encoder, est, frame)
    assert s.n_clusters == 3 and s.sizes.sum() == 120 and s.silhouette > 0.3
    assert s.training_sizes.tolist() == np.bincount(est.labels_, minlength=3).tolist()
    d = compare_models((encoder, est), (encoder, est), frame, POLICY, label_column="truth",
                       validation_success=True, candidate_version="2", champion_version="1")
    assert d.promote and {"acc", "nmi"} <= set(gates(d))
    other = FeatureEncoder(FeaturesConfig(numeric=["x", "gone"]))
    other.fit(frame.assign(gone=1.0))
    d = compare_models((encoder, est), (other, est), frame, POLICY, validation_success=True)
    assert "['gone']" in gates(d)["comparison"].detail
    assert len(reference_sample(frame, 50)) == 50 and len(reference_sample(frame, 500)) == 120


# ----------------------------------------------------------------- registry moves
@pytest.fixture()
def registered(store_uri, request, tmp_path):
    """(store, model name): a model per test with versions 1..3, champion 1, challenger 3."""
    client = MlflowClient(store_uri, registry_uri=store_uri)
    name = request.node.name
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "3")
    return store_uri, name


@pytest.mark.slow  # an MLflow store
def test_promote_then_rollback_swaps_champion_and_previous(registered):
    uri, m = registered
    after = registry.apply_verdict(uri, m, "3", promote=True, expected_champion="1")
    assert after == {"champion": "3", "challenger": "3", "previous": "1"}
    assert registry.rollback_champion(uri, m) == {"restored": "1", "demoted": "3"}
    assert registry.aliases(uri, m) == {"champion": "1", "previous": "3"}  # challenger cleared
    with pytest.raises(Conflict, match="is version 1, not 2 as when the gates were evaluated"):
        registry.apply_verdict(uri, m, "3", promote=True, expected_champion="2")
    assert registry.aliases(uri, m)["champion"] == "1"
    assert registry.aliases(uri, "missing") == {}


@pytest.mark.slow  # an MLflow store
def test_rollback_without_previous_is_an_error(registered):
    uri, m = registered
    with pytest.raises(ValueError, match="nothing to roll back to"):
        registry.rollback_champion(uri, m)


@pytest.mark.slow  # an MLflow store
def test_a_failed_alias_write_restores_the_aliases_already_moved(registered, monkeypatch):
    uri, m = registered
    before = registry.aliases(uri, m)
    calls = []
    real = MlflowClient.set_registered_model_alias

    def flaky(self, name, alias, version):
        calls.append((alias, version))
        if len(calls) == 2:
            raise OSError("registry went away")
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky)
    with pytest.raises(OSError, match="went away"):
        registry.apply_verdict(uri, m, "3", promote=True, expected_champion="1")
    assert calls[:2] == [("previous", "1"), ("champion", "3")]
    monkeypatch.undo()
    assert registry.aliases(uri, m) == before  # "previous" removed again


@pytest.mark.slow  # an MLflow store
def test_version_tags_replace_stale_gate_tags(registered):
    uri, m = registered
    registry.set_version_tags(uri, m, "2", {"promotion.gate.acc": "fail", "keep": "1"})
    registry.set_version_tags(uri, m, "2", {"promotion.gate.silhouette": "pass"},
                              replace_prefix="promotion.gate.")
    tags = MlflowClient(uri, registry_uri=uri).get_model_version(m, "2").tags
    assert tags == {"promotion.gate.silhouette": "pass", "keep": "1"}
