"""Alias semantics end to end (issue 10, item 7 and "no unjudged version holds an alias").

One registry goes through a story (the module fixture records every outcome, the tests check
them): a version registered by hand holds no alias until `promote` judges it; a nightly run that
dies between registration and the gate leaves its version unjudged (tag
``promotion.decision=pending``) and without an alias; the rerun's version holds no alias while
its gates run, then is promoted; `rollback` clears `challenger` (it pointed at the demoted
version), so a plain `promote` cannot put the rolled-back model back; naming the rolled-back
version explicitly still gates it, with a note in the decision.
"""

import pytest
from typer.testing import CliRunner

from flowkit import (RUN_DATE, aliases, log_by_hand, register_by_hand, tiny_config,
                     version_tags, versions, write_source)
from decflow import DeepEmbeddedClustering
from decflow.config import dump_config
from decflow.flows import promote as promote_module
from decflow.flows.cli import app
from decflow.flows.promote import promote, rollback
from decflow.flows.recluster import recluster

# Generous margins: every promotion below is decided by the alias rules, not by the metrics.
POLICY = {"max_silhouette_drop": 1.0, "max_confidence_drop": 1.0, "max_supervised_drop": 1.0}


def register_reasonable_model(config) -> str:
    """A reasonable model of the window, logged and registered without any flow."""
    m = config.model

    def fit(X):
        return DeepEmbeddedClustering(m.n_clusters, n_components=m.n_components,
                                      hidden=tuple(m.hidden), pretrain_epochs=10, max_iter=20,
                                      random_state=1).fit(X)

    return register_by_hand(config, *log_by_hand(config, fit, run_name="by-hand"))


def attempt(fn, *args, **kwargs):
    """(result, None) or (None, the exception): the fixture records, the tests assert."""
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:  # recorded for the tests below
        return None, exc


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    home = tmp_path_factory.mktemp("registry-semantics")
    source = str(home / "source")
    write_source(source)
    config = tiny_config(home, source, promotion=POLICY)
    out = {"config": config}

    out["v1"] = register_reasonable_model(config)
    out["after_registration"] = aliases(config)
    out["v1_tags"] = version_tags(config, out["v1"])
    out["first"], out["first_error"] = attempt(promote, config=config, candidate=out["v1"])
    out["after_first"] = aliases(config)

    # A nightly run dies after registering its version, before any gate ran.
    with pytest.MonkeyPatch.context() as mp:
        def killed(*args, **kwargs):
            raise RuntimeError("killed before the gate")

        mp.setattr(promote_module, "compare_models", killed)
        out["crashed"], out["crash_error"] = attempt(recluster, config=config, run_date=RUN_DATE)
    out["after_crash"] = aliases(config)
    out["versions_after_crash"] = versions(config)

    # The rerun: record the aliases as they are while its gates run.
    seen = {}
    real = promote_module.compare_models

    def spy(config_, candidate, *args, **kwargs):
        seen["candidate"] = str(candidate.version)
        seen["aliases"] = aliases(config_)
        return real(config_, candidate, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(promote_module, "compare_models", spy)
        out["rerun"], out["rerun_error"] = attempt(recluster, config=config, run_date=RUN_DATE)
    out["during_gate"] = dict(seen)
    out["after_rerun"] = aliases(config)

    out["rollback"], out["rollback_error"] = attempt(rollback, config=config)
    out["after_rollback"] = aliases(config)
    out["plain"], out["plain_error"] = attempt(promote, config=config)
    out["after_plain"] = aliases(config)

    path = home / "c.yaml"
    path.write_text(dump_config(config))
    cli = CliRunner().invoke(app, ["promote", "--config", str(path)])
    out["cli"] = (cli.exit_code, cli.output)
    out["after_cli"] = aliases(config)

    demoted = (out["rollback"] or {}).get("demoted")
    out["explicit"], out["explicit_error"] = attempt(promote, config=config, candidate=demoted)
    out["after_explicit"] = aliases(config)
    return out


def test_registration_sets_no_alias_not_even_for_the_first_version(story):
    assert story["v1"] == "1"
    assert story["after_registration"] == {}
    assert story["v1_tags"]["promotion.decision"] == "pending"


def test_the_first_version_is_judged_then_becomes_champion(story):
    assert story["first_error"] is None, story["first_error"]
    first = story["first"]
    assert first["decision"] == "promote" and first["champion"] is None
    assert {g["name"] for g in first["gates"]} == {"validation", "cluster_sizes", "comparison"}
    assert story["after_first"] == {"champion": "1", "challenger": "1"}


def test_a_run_killed_before_the_gate_leaves_an_unjudged_version_without_alias(story):
    assert "killed before the gate" in str(story["crash_error"])
    assert story["versions_after_crash"] == ["1", "2"]
    assert story["after_crash"] == {"champion": "1", "challenger": "1"}
    assert version_tags(story["config"], 2)["promotion.decision"] == "pending"


def test_the_rerun_is_judged_before_any_alias_moves(story):
    assert story["rerun_error"] is None, story["rerun_error"]
    assert story["rerun"]["model_version"] == "3"
    assert story["during_gate"] == {"candidate": "3",
                                    "aliases": {"champion": "1", "challenger": "1"}}
    assert story["rerun"]["promotion"]["decision"] == "promote"
    assert story["after_rerun"] == {"champion": "3", "challenger": "3", "previous": "1"}
    # the crashed run's version was never judged and still holds no alias
    assert version_tags(story["config"], 2)["promotion.decision"] == "pending"


def test_rollback_clears_challenger_on_the_demoted_version(story):
    assert story["rollback"] == {"restored": "1", "demoted": "3"}
    assert story["after_rollback"] == {"champion": "1", "previous": "3"}


def test_a_plain_promote_after_rollback_cannot_bring_the_bad_model_back(story):
    assert story["plain"] is None
    assert isinstance(story["plain_error"], ValueError)
    assert "has no version or alias 'challenger'" in str(story["plain_error"])
    assert "rollback" in str(story["plain_error"])
    assert story["after_plain"] == {"champion": "1", "previous": "3"}
    code, output = story["cli"]
    assert code == 2, output
    assert story["after_cli"] == {"champion": "1", "previous": "3"}


def test_promoting_the_rolled_back_version_by_number_is_gated_and_noted(story):
    assert story["explicit_error"] is None, story["explicit_error"]
    explicit = story["explicit"]
    assert explicit["decision"] == "promote" and explicit["candidate"] == "3"
    assert any("was rolled back at" in note for note in explicit["notes"]), explicit["notes"]
    assert story["after_explicit"] == {"champion": "3", "challenger": "3", "previous": "1"}
    tags = version_tags(story["config"], 3)
    assert "was rolled back at" in tags["promotion.notes"]
