"""Promotion gate, alias moves and rollback end to end: real sqlite MLflow store, Prefect harness.

One registry goes through a story (the module fixture), then each test checks one part of it:
a collapsed model is the first version (champion by default); the nightly run's good model is
gated and promoted over it; rollback restores the collapsed one; a failure injected in the middle
of the gates moves nothing; the good model is promoted again by hand; a second collapsed
challenger is rejected with the failing gate named.
"""

import datetime as dt
import warnings

import numpy as np
import pytest
from prefect.exceptions import ParameterTypeError
from typer.testing import CliRunner

from flowkit import (RUN_DATE, aliases, latest_artifact, log_by_hand, register_by_hand,
                     tiny_config, version_tags, write_source)
from decflow import DeepEmbeddedClustering, DegenerateClusterWarning
from decflow.config import dump_config
from decflow.data import partitioned
from decflow.registry import aliases as registry
from decflow.registry import promotion
from decflow.flows.cli import app
from decflow.flows.promote import promote, rollback
from decflow.flows.recluster import recluster

NAME = "tiny"


def log_collapsed_model(config) -> tuple[str, str]:
    """A model whose centroids all coincide: every row lands in cluster 0 (a collapse)."""
    m = config.model

    def collapse(X):
        est = DeepEmbeddedClustering(m.n_clusters, n_components=m.n_components,
                                     hidden=tuple(m.hidden), pretrain_epochs=10, max_iter=2,
                                     random_state=0)
        with warnings.catch_warnings():
            # a collapsed model is the point of this helper
            warnings.simplefilter("ignore", DegenerateClusterWarning)
            est.pretrain(X).fine_tune(X, init=np.zeros((m.n_clusters, m.n_components)))
        assert set(est.labels_) == {0}
        return est

    return log_by_hand(config, collapse, run_name="collapsed")


def _boom(*args, **kwargs):
    raise RuntimeError("injected failure between gates")


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    home = tmp_path_factory.mktemp("promote")
    source = str(home / "source")
    write_source(source)
    config = tiny_config(home, source)
    out = {"config": config}

    run_id, model_uri = log_collapsed_model(config)
    out["v_collapsed"] = register_by_hand(config, run_id, model_uri)
    # a champion from before the gates existed (registration itself sets no alias)
    registry.apply_verdict(config.tracking_uri(), NAME, out["v_collapsed"], promote=True,
                           expected_champion=None)
    out["first"] = promote(config=config)
    out["first_aliases"] = aliases(config)

    out["nightly"] = recluster(config=config, run_date=RUN_DATE)
    out["nightly_aliases"] = aliases(config)
    out["nightly_labels"] = partitioned.read_partition(config.labels_uri(), "ds", RUN_DATE)
    out["nightly_tags"] = version_tags(config, out["nightly"]["model_version"])

    out["rollback"] = rollback(config=config)
    out["rollback_aliases"] = aliases(config)

    good = out["nightly"]["model_version"]
    tags_before = version_tags(config, good)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(promotion, "_agreement_gate", _boom)
        with pytest.raises(RuntimeError, match="injected failure") as err:
            promote(config=config, candidate=good)
    out["injected_error"] = err.value
    out["injected_aliases"] = aliases(config)
    out["injected_tags"] = (tags_before, version_tags(config, good))

    out["manual"] = promote(config=config, candidate=good, run_date=RUN_DATE)
    out["manual_aliases"] = aliases(config)

    out["v_bad"] = register_by_hand(config, run_id, model_uri)
    out["bad"] = promote(config=config, candidate=out["v_bad"])  # judged: not yet challenger
    out["bad_aliases"] = aliases(config)
    return out


def test_first_version_is_champion_and_trivially_kept(story):
    config, first = story["config"], story["first"]
    assert story["v_collapsed"] == "1"
    assert first["decision"] == "already_champion" and not first["promote"]
    assert story["first_aliases"] == {"champion": "1", "challenger": "1"}
    assert version_tags(config, 1)["promotion.gate.already_champion"].startswith("pass")


def test_nightly_run_promotes_a_better_challenger_and_labels_with_it(story):
    nightly = story["nightly"]
    good = nightly["model_version"]
    assert good == "2"
    assert nightly["promotion"]["decision"] == "promote"
    assert story["nightly_aliases"] == {"champion": "2", "challenger": "2", "previous": "1"}
    assert nightly["champion_version"] == "2"
    assert story["nightly_labels"]["model_version"].unique().tolist() == ["2"]
    tags = story["nightly_tags"]  # the manual promotion below evaluates version 2 again
    assert tags["promotion.decision"] == "promote"
    assert tags["promotion.champion_version"] == "1"
    assert tags["promotion.failed_gates"] == "none"
    assert int(tags["promotion.reference_rows"]) == 270  # the whole (tiny) window
    for gate in ("validation", "cluster_sizes", "silhouette", "confidence", "agreement_ari",
                 "acc", "nmi"):
        assert tags[f"promotion.gate.{gate}"].startswith("pass value="), gate
    # Aligned to the collapsed champion (everything in its cluster 0): ids still a permutation.
    assert sorted(nightly["alignment"]["mapping"].values()) == [0, 1, 2, 3]
    assert nightly["alignment"]["reference_version"] == "1"


def test_rollback_restores_the_previous_champion(story):
    assert story["rollback"] == {"restored": "1", "demoted": "2"}
    assert story["rollback_aliases"] == {"champion": "1", "previous": "2"}  # challenger cleared
    tags = version_tags(story["config"], 2)
    assert "promotion.rolled_back_at" in tags


def test_failure_during_gate_evaluation_moves_no_alias_and_records_nothing(story):
    assert "injected failure" in str(story["injected_error"])
    assert story["injected_aliases"] == story["rollback_aliases"]
    before, after = story["injected_tags"]
    assert after["promotion.evaluated_at"] == before["promotion.evaluated_at"]
    assert after == before


def test_a_passing_candidate_is_promoted_by_hand(story):
    manual = story["manual"]
    assert manual["decision"] == "promote" and manual["candidate"] == "2"
    assert manual["champion"] == "1"
    assert story["manual_aliases"] == {"champion": "2", "challenger": "2", "previous": "1"}
    assert manual["n_rows"] == 90  # --date: that partition only


def test_collapsed_challenger_is_rejected_with_the_failing_gate_named(story):
    config, bad = story["config"], story["bad"]
    assert story["v_bad"] == "3"
    assert bad["decision"] == "reject" and not bad["promote"]
    failed = {g["name"] for g in bad["gates"] if not g["passed"]}
    assert {"cluster_sizes", "silhouette", "acc", "nmi"} <= failed
    assert "validation" not in failed
    assert story["bad_aliases"] == {"champion": "2", "challenger": "3", "previous": "1"}
    tags = version_tags(config, 3)
    assert tags["promotion.decision"] == "reject"
    assert tags["promotion.gate.cluster_sizes"].startswith("fail value=0 threshold=2 (on ")
    assert "cluster_sizes" in tags["promotion.failed_gates"].split(",")
    assert tags["promotion.summary"].startswith("version 3 rejected, champion 2 stays")
    artifact = latest_artifact("promotion-decision")
    assert "| cluster_sizes | **fail** |" in artifact



def test_cli_rollback_and_promote(story, tmp_path):
    config = story["config"]
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    runner = CliRunner()
    out = runner.invoke(app, ["rollback", "--config", str(path)])
    assert out.exit_code == 0, out.output
    assert "champion is version 1" in out.output
    assert aliases(config)["champion"] == "1"
    out = runner.invoke(app, ["promote", "--config", str(path), "--model", "2",
                              "--run-date", RUN_DATE.isoformat()])
    assert out.exit_code == 0, out.output
    assert "promoted over champion 1" in out.output
    out = runner.invoke(app, ["promote", "--config", str(path)])  # the collapsed challenger
    assert out.exit_code == 1
    assert "cluster_sizes" in out.output and "rejected" in out.output
    assert aliases(config) == {"champion": "2", "challenger": "3", "previous": "1"}
    out = runner.invoke(app, ["promote", "--config", str(path), "--model", "9"])
    assert out.exit_code == 2 and "no version or alias '9'" in out.output


def test_flows_validate_their_parameters():
    params = promote.validate_parameters({"config": {}, "candidate": "3",
                                          "run_date": "2026-11-21"})
    assert params["run_date"] == dt.date(2026, 11, 21)
    with pytest.raises(ParameterTypeError, match=r"config\.model\.n_clusterz: Extra inputs"):
        rollback.validate_parameters({"config": {"model": {"n_clusterz": 5}}})
