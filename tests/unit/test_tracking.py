"""MLflow helpers against a real sqlite store: logging, registry aliases, loading, metrics."""

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.types.schema import Array

from decflow import DeepEmbeddedClustering
from decflow.config import FeaturesConfig
from decflow.errors import ConfigError
from decflow.model import scoring
from decflow.model.features import FeatureEncoder
from decflow.registry import aliases as registry
from decflow.registry import integrity
from decflow.registry import packaging
from decflow.registry import runs
from decflow.registry import versions

pytestmark = pytest.mark.slow  # an MLflow store

MODEL = "decflow-test"
TINY = dict(n_components=4, hidden=(32, 32), pretrain_epochs=5, max_iter=30, n_init=2,
            batch_size=64, init="k-means", random_state=0)


def make_frame(n_per=50, seed=0):
    """Three blobs seen through a float, an int, a categorical and an 8-long vector column."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per)
    X = rng.normal(scale=5.0, size=(3, 10))[y] + rng.normal(size=(len(y), 10))
    colour = np.array(["red", "green", "blue"], dtype=object)[y]
    colour[::17] = None
    return pd.DataFrame({
        "id": np.arange(len(y)),
        "x": X[:, 0],
        "n": np.round(X[:, 1]).astype(np.int64),
        "colour": colour,
        "v": list(X[:, 2:].astype(np.float32)),
    })


FEATURES = FeaturesConfig(numeric=["x", "n"], categorical=["colour"], vector={"v": 8})


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """MLflow falls back to ./mlflow.db where it uses its global URI; keep that out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One sqlite store; a run with a tiny model trained, logged and registered twice.

    Runs from inside the temp dir so that anything written to MLflow's default store (a bug
    here) would land there and be caught.
    """
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    artifacts = (tmp / "mlartifacts").as_uri()
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        exp_id = runs.ensure_experiment(uri, "decflow", artifacts)
        client = MlflowClient(uri)
        run_id = client.create_run(exp_id).info.run_id
        df = make_frame()
        encoder = FeatureEncoder(FEATURES).fit(df)
        estimator = DeepEmbeddedClustering(
            3, callbacks=[runs.MlflowCallback(client, run_id)], **TINY
        ).fit(encoder.transform(df))
        estimator.callbacks = None
        model_uri = packaging.log_model(run_id, uri, estimator, encoder, df.head(5))
        v1 = packaging.register_version(uri, model_uri, MODEL, run_id=run_id,
                                     tags={"data_window": "2026-01-01..2026-01-03"})
        v2 = packaging.register_version(uri, model_uri, MODEL, run_id=run_id)
        # registration sets no alias; a gate's verdicts would: v1 promoted, v2 judged after it
        registry.apply_verdict(uri, MODEL, "1", promote=True, expected_champion=None)
        registry.apply_verdict(uri, MODEL, "2", promote=False, expected_champion="1")
        client.set_terminated(run_id)
    finally:
        os.chdir(cwd)
    return SimpleNamespace(tmp=tmp, uri=uri, artifacts=artifacts, exp_id=exp_id, client=client,
                           run_id=run_id, df=df, encoder=encoder, estimator=estimator,
                           model_uri=model_uri, v1=v1, v2=v2)


def test_ensure_experiment_is_idempotent_and_keeps_artifact_location(tracked):
    assert runs.ensure_experiment(tracked.uri, "decflow", None) == tracked.exp_id
    exp = tracked.client.get_experiment(tracked.exp_id)
    assert exp.artifact_location == tracked.artifacts
    other = runs.ensure_experiment(tracked.uri, "other", None)
    assert other != tracked.exp_id
    tracked.client.delete_experiment(other)
    assert runs.ensure_experiment(tracked.uri, "other", None) == other
    assert tracked.client.get_experiment(other).lifecycle_stage == "active"


def test_callback_streams_training_metrics(tracked):
    history = {key: tracked.client.get_metric_history(tracked.run_id, key)
               for key in ("pretrain_loss", "kl", "reconstruction", "delta_label")}
    assert [m.step for m in history["pretrain_loss"]] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([m.value for m in history["pretrain_loss"]],
                               tracked.estimator.history_["pretrain_loss"], rtol=1e-6)
    finetune = tracked.estimator.history_["finetune"]
    for key in ("kl", "reconstruction", "delta_label"):
        got = sorted((m.step, m.value) for m in history[key])
        want = [(i + 1, row[key]) for i, row in enumerate(finetune) if key in row]
        assert [s for s, _ in got] == [s for s, _ in want]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)


class _RecordingClient:
    def __init__(self):
        self.batches = []

    def log_batch(self, run_id, metrics=(), synchronous=True):
        self.batches.append((run_id, list(metrics)))


def test_callback_batches_skips_nan_and_prefixes():
    client = _RecordingClient()
    cb = runs.MlflowCallback(client, "r1", prefix="warm/", flush_every=3)
    for epoch in (1, 2, 3, 4):
        cb.on_epoch_end("pretrain", epoch, {"loss": 1.0 / epoch})
    assert [len(m) for _, m in client.batches] == [3]  # flushed once 3 values were pending
    cb.on_epoch_end("finetune", 1, {"kl": 0.5, "reconstruction": math.nan, "delta_label": 0.2,
                                    "step": 10, "update": 1})
    cb.on_phase_end("finetune", {})
    sent = [m for _, batch in client.batches for m in batch]
    assert [(m.key, m.step) for m in sent] == [
        ("warm/pretrain_loss", 1), ("warm/pretrain_loss", 2), ("warm/pretrain_loss", 3),
        ("warm/pretrain_loss", 4), ("warm/kl", 1), ("warm/delta_label", 1)]
    cb.on_phase_end("finetune", {})  # nothing pending: no empty batch
    assert len(client.batches) == 2


def test_registration_sets_no_alias_and_tags_the_version_pending(tracked):
    assert (str(tracked.v1.version), str(tracked.v2.version)) == ("1", "2")  # int on sqlite
    assert tracked.v1.aliases == [] and tracked.v2.aliases == []
    v1 = versions.get_version(tracked.uri, MODEL, "1")
    assert v1.aliases == ["champion"]  # set by the verdicts in the fixture
    assert {k: v for k, v in v1.tags.items() if k != integrity.MANIFEST_TAG} == {
        "data_window": "2026-01-01..2026-01-03", "promotion.decision": "pending"}
    assert v1.run_id == tracked.run_id
    assert str(versions.get_version(tracked.uri, MODEL, "champion").version) == "1"
    assert str(versions.get_version(tracked.uri, MODEL, "challenger").version) == "2"
    assert versions.get_version(tracked.uri, MODEL, "previous") is None
    assert versions.get_version(tracked.uri, MODEL, "9") is None
    assert versions.get_version(tracked.uri, "no-such-model", "champion") is None
    # The LoggedModel links to both versions, as mlflow.register_model would record.
    model_id = tracked.model_uri.removeprefix("models:/")
    links = json.loads(tracked.client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert links == [{"name": MODEL, "version": "1"}, {"name": MODEL, "version": "2"}]


def test_logged_model_is_code_plus_safe_artifacts(tracked):
    model_id = tracked.model_uri.removeprefix("models:/")
    logged = tracked.client.get_logged_model(model_id)
    assert logged.status.to_proto() == mlflow.entities.LoggedModelStatus.READY.to_proto()
    assert logged.source_run_id == tracked.run_id
    assert logged.experiment_id == tracked.exp_id
    run = tracked.client.get_run(tracked.run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    root = Path(logged.artifact_location.removeprefix("file://"))
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", "artifacts/encoder.json",
            "artifacts/estimator.safetensors", "code/decflow/model/estimator.py",
            "requirements.txt"} <= files
    assert not any(f.endswith((".pkl", ".pyc")) for f in files)
    reqs = (root / "requirements.txt").read_text().split()
    for dist in ("torch", "numpy", "pandas", "scikit-learn", "safetensors", "scipy"):
        assert any(r.startswith(f"{dist}~=") or r.startswith(f"{dist}==") for r in reqs), reqs


def test_signature_from_encoder_contract(tracked):
    # mlflow.models.get_model_info would look the model id up in the global tracking store.
    root = Path(tracked.client.get_logged_model(tracked.model_uri.removeprefix("models:/"))
                .artifact_location.removeprefix("file://"))
    sig = mlflow.models.Model.load(str(root / "MLmodel")).signature
    assert sig is not None
    inputs = {c.name: c for c in sig.inputs.inputs}
    assert list(inputs) == ["x", "n", "colour", "v"]  # id is not an input
    assert inputs["x"].type.name == inputs["n"].type.name == "double"
    assert inputs["colour"].type.name == "string" and not inputs["colour"].required
    assert isinstance(inputs["v"].type, Array) and inputs["v"].required
    assert sig.outputs.input_names() == ["cluster_id", "confidence", "distance"]
    assert [t.name for t in sig.outputs.input_types()] == ["integer", "float", "float"]


def test_champion_pyfunc_predicts_exactly_like_score_frame(tracked, monkeypatch, tmp_path):
    df = make_frame(n_per=20, seed=1).set_index(pd.RangeIndex(100, 160))
    df["v"] = df["v"].map(lambda a: [float(x) for x in a])  # plain lists work too
    expected = scoring.score_frame(tracked.encoder, tracked.estimator, df)
    assert expected.dtypes.astype(str).to_dict() == {
        "cluster_id": "int32", "confidence": "float32", "distance": "float32"}
    assert expected.index.equals(df.index)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked.uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    got = pyfunc.predict(scoring.as_model_input(tracked.encoder, df))
    pd.testing.assert_frame_equal(got, expected)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    scorer = versions.load_scorer(tracked.uri, MODEL, "challenger")
    pd.testing.assert_frame_equal(scorer.predict(scoring.as_model_input(tracked.encoder, df)),
                                  expected)
    encoder, estimator = versions.load_components(tracked.uri, MODEL, "1")
    pd.testing.assert_frame_equal(scoring.score_frame(encoder, estimator, df), expected)
    assert not list(tmp_path.glob("*.db"))


def test_helpers_leave_no_global_mlflow_state(tracked):
    assert mlflow.active_run() is None
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() != tracked.uri
    assert [p.name for p in tracked.tmp.glob("*.db")] == ["mlflow.db"]


def test_unknown_reference_is_a_clear_error(tracked):
    with pytest.raises(ConfigError, match="has no version or alias 'previous'"):
        versions.load_scorer(tracked.uri, MODEL, "previous")
    with pytest.raises(ValueError, match=r"missing feature columns: \['v'\]"):
        scoring.as_model_input(tracked.encoder, tracked.df.drop(columns="v"))
    with pytest.raises(ValueError, match="input_example is empty"):
        packaging.log_model(tracked.run_id, tracked.uri, tracked.estimator, tracked.encoder,
                           tracked.df.head(0))


def test_score_frame_on_no_rows(tracked):
    out = scoring.score_frame(tracked.encoder, tracked.estimator, tracked.df.head(0))
    assert len(out) == 0 and list(out.columns) == ["cluster_id", "confidence", "distance"]
