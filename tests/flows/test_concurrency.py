"""Runs that overlap: two nightly runs for one date, and a manual `promote` racing the nightly
gate. The overlap is made deterministic by running the second command (a real `decflow`
process) from inside the first run, at the moment under test:

- a second `decflow run` for the date while the first one trains: refused at once (exit 5,
  the holder named), nothing of it registered, logged or written;
- a manual promote that completes between the nightly gate's evaluation and its alias moves:
  the nightly's moves are refused (the champion is no longer the one it compared against), so
  the aliases are exactly those the manual promote alone produced;
- a manual promote arriving while the nightly gate moves the aliases: refused (exit 5), so the
  aliases are exactly those the nightly gate alone produced.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from decflow.config import dump_config
from decflow.data import partitioned
from decflow.errors import Conflict
from decflow.registry import aliases as registry
from flowkit import RUN_DATE, tiny_config, write_source
from decflow.flows import recluster as recluster_module
from decflow.flows.recluster import recluster
from decflow.tasks import promotion as promotion_tasks

NAME = "tiny"
LENIENT = {"min_cluster_ratio": 0.0, "max_silhouette_drop": 10.0, "max_confidence_drop": 10.0,
           "max_supervised_drop": 10.0}


def _cli(config_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The `decflow` command in its own process, on the test's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DECFLOW_")}
    child_env.update(PREFECT_API_URL=PREFECT_API_URL.value(), MLFLOW_DISABLE_TELEMETRY="true",
                     DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", **env)
    exe = Path(sys.executable).with_name("decflow")
    return subprocess.run([str(exe), args[0], "--config", str(config_path), *args[1:]],
                          capture_output=True, text=True, env=child_env, timeout=300)


def _client(config) -> MlflowClient:
    return MlflowClient(config.tracking_uri(), registry_uri=config.tracking_uri())


def _versions(config) -> list[str]:
    return sorted((str(v.version) for v in _client(config).search_model_versions(
        f"name='{NAME}'")), key=int)


def _runs(config) -> int:
    exp = _client(config).get_experiment_by_name(config.registry.experiment)
    return len(_client(config).search_runs([exp.experiment_id]))


def _labels(config):
    return partitioned.read_partition(config.labels_uri(), "ds", RUN_DATE)


def _label_bytes(config) -> dict[str, bytes]:
    root = Path(config.labels_uri())
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    home = tmp_path_factory.mktemp("concurrency")
    source = str(home / "source")
    write_source(source)
    config = tiny_config(home / "home", source, train={"pretrain_epochs": 3},
                         promotion=LENIENT)
    path = home / "pipeline.yaml"
    path.write_text(dump_config(config))
    # the same table, labels and registry from another home: another host's worker (its
    # `flock` under <home>/locks is its own; only the Prefect server is shared)
    other = tiny_config(home / "other-home", source, train={"pretrain_epochs": 3},
                        promotion=LENIENT, labels={"uri": config.labels_uri()},
                        registry={"tracking_uri": config.tracking_uri()})
    other_path = home / "other.yaml"
    other_path.write_text(dump_config(other))
    out = {"config": config}
    recluster(config=config, run_date=RUN_DATE)  # version 1: judged, champion
    out["v1_aliases"] = registry.aliases(config.tracking_uri(), NAME)

    # 1. a second nightly run for the same date while the first one trains
    real_fit = recluster_module.fit_dec

    def fit_with_a_second_run(*args, **kwargs):
        out["second_before"] = (_versions(config), _runs(config), _label_bytes(config))
        out["second"] = _cli(path, "run", "--run-date", str(RUN_DATE))
        out["other_home"] = _cli(other_path, "run", "--run-date", str(RUN_DATE))
        out["other_backfill"] = _cli(other_path, "backfill", "--start", str(RUN_DATE),
                                     "--end", str(RUN_DATE), "--force")
        out["second_after"] = (_versions(config), _runs(config), _label_bytes(config))
        return real_fit(*args, **kwargs)

    held = config.model_copy(update={"promotion": config.promotion.model_copy(
        update={"auto_promote": False})})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recluster_module, "fit_dec", fit_with_a_second_run)
        out["first"] = recluster(config=held, run_date=RUN_DATE)  # version 2: not gated
    out["after_first"] = registry.aliases(config.tracking_uri(), NAME)
    out["first_labels"] = _labels(config)

    # 2. a manual promote of version 2 completes between the nightly gate's evaluation and
    #    its alias moves (the registry lock is where the moves begin)
    real_lock = promotion_tasks.registry_lock
    calls = []

    def lock_after_a_manual_promote(cfg):
        if not calls:
            calls.append("manual")
            out["manual"] = _cli(path, "promote", "--model", out["first"]["model_version"])
            out["manual_aliases"] = registry.aliases(config.tracking_uri(), NAME)
        return real_lock(cfg)

    out["labels_before_gate_race"] = _label_bytes(config)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(promotion_tasks, "registry_lock", lock_after_a_manual_promote)
        with pytest.raises(Conflict) as err:
            recluster(config=config, run_date=RUN_DATE)  # version 3
    out["raced_error"] = err.value
    out["raced_version"] = _versions(config)[-1]
    out["raced_aliases"] = registry.aliases(config.tracking_uri(), NAME)
    out["labels_after_gate_race"] = _label_bytes(config)
    out["raced_tags"] = _client(config).get_model_version(NAME, out["raced_version"]).tags

    # 3. a manual promote (of version 3) arrives while the nightly gate moves the aliases
    real_apply = registry.apply_verdict

    def apply_with_a_manual_promote(*args, **kwargs):
        if "late" not in out:
            out["before_nightly_moves"] = registry.aliases(config.tracking_uri(), NAME)
            out["late"] = _cli(path, "promote", "--model", out["raced_version"],
                               DECFLOW_REGISTRY__LOCK_WAIT_S="0")
            out["late_aliases"] = registry.aliases(config.tracking_uri(), NAME)
        return real_apply(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "apply_verdict", apply_with_a_manual_promote)
        out["nightly"] = recluster(config=config, run_date=RUN_DATE)  # version 4
    out["nightly_aliases"] = registry.aliases(config.tracking_uri(), NAME)
    return out


def test_a_second_run_for_the_same_date_is_refused_while_the_first_runs(story):
    second = story["second"]
    assert second.returncode == 5, second.stderr
    assert (f"conflict: a run writing the labels of {RUN_DATE} is in progress elsewhere"
            in second.stderr)
    assert f"held by pid {os.getpid()}" in second.stderr  # the first run is named
    assert second.stderr.strip().splitlines()[-1].startswith("conflict: a run writing")
    assert "Traceback" not in second.stderr
    # nothing of the refused run: no version, no MLflow run, no label file touched
    assert story["second_after"] == story["second_before"]


@pytest.mark.parametrize("command", ["other_home", "other_backfill"])
def test_a_run_or_backfill_of_the_night_from_another_home_is_refused_by_the_server(story,
                                                                                 command):
    """The first run holds the night's global concurrency limit on the Prefect server."""
    refused = story[command]
    assert refused.returncode == 5, refused.stdout + refused.stderr
    out = " ".join((refused.stdout + refused.stderr).split())
    assert (f"a run writing the labels of {RUN_DATE} in {story['config'].labels_uri()} is in "
            "progress on another host or home: the Prefect server's concurrency limit "
            "'decflow-labels-") in out
    assert "Traceback" not in out
    # nothing of the refused runs either (checked over both and the same-home one)
    assert story["second_after"] == story["second_before"]


def test_the_first_run_completes_alone(story):
    config, first = story["config"], story["first"]
    assert first["model_version"] == "2" and _versions(config)[:2] == ["1", "2"]
    assert story["after_first"] == story["v1_aliases"]  # not gated: no alias moved
    labels = story["first_labels"]
    assert set(labels["model_version"]) == {"1"}  # labelled by the champion
    assert len(labels) == first["labels"]["rows"] == 90


def test_a_manual_promote_that_wins_the_race_is_the_only_move(story):
    manual = story["manual"]
    assert manual.returncode == 0, manual.stderr
    assert story["manual_aliases"] == {"champion": "2", "previous": "1", "challenger": "2"}
    # the nightly compared against version 1: its moves are refused, nothing else moved
    assert str(story["raced_error"]).startswith(
        f"the champion of '{NAME}' is version 2, not 1 as when the gates were evaluated")
    assert story["raced_aliases"] == story["manual_aliases"]
    assert story["labels_after_gate_race"] == story["labels_before_gate_race"]
    tags = story["raced_tags"]
    assert tags["promotion.decision"] == "conflict"
    assert "version 2, not 1" in tags["promotion.conflict"]


def test_a_manual_promote_arriving_during_the_nightly_moves_is_refused(story):
    late = story["late"]
    assert late.returncode == 5, late.stderr
    assert f"conflict: an alias move of model '{NAME}' is in progress elsewhere" in late.stderr
    assert late.stderr.strip().splitlines()[-1].startswith("conflict: an alias move")
    assert "Traceback" not in late.stderr
    assert story["late_aliases"] == story["before_nightly_moves"]  # it moved nothing
    tags = _client(story["config"]).get_model_version(NAME, story["raced_version"]).tags
    assert tags["promotion.decision"] == "conflict"  # its verdict is marked as not applied
    assert "in progress elsewhere" in tags["promotion.conflict"]
    # the aliases are what the nightly gate alone makes of the state before it: the lenient
    # gates promote the four balanced blobs
    before, nightly = story["before_nightly_moves"], story["nightly"]
    new = nightly["model_version"]
    assert nightly["promotion"]["decision"] == "promote"
    assert story["nightly_aliases"] == {"champion": new, "previous": before["champion"],
                                        "challenger": new}
    assert set(_labels(story["config"])["model_version"]) == {story["nightly_aliases"][
        "champion"]}
