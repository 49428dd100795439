"""Content digests of the logged model: recorded at registration, verified before every load.

A real sqlite store with a file artifact store: a test changes bytes in the artifact store
directory (as someone with write access to it could) and checks that decflow's loaders refuse,
naming the file. Loading through ``load_model_safely`` runs no code stored with the model.
"""

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from decflow import DeepEmbeddedClustering
from decflow import errors
from decflow.config import FeaturesConfig
from decflow.model import scoring
from decflow.model.features import FeatureEncoder
from decflow.registry import integrity
from decflow.registry import packaging
from decflow.registry import runs
from decflow.registry import versions

pytestmark = pytest.mark.slow  # an MLflow store

MODEL = "digest-test"
FEATURES = FeaturesConfig(numeric=["x"], categorical=["colour"], vector={"v": 4})


def make_frame(n_per=30, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per)
    X = rng.normal(scale=5.0, size=(3, 5))[y] + rng.normal(size=(len(y), 5))
    return pd.DataFrame({"id": np.arange(len(y)), "x": X[:, 0],
                         "colour": np.array(["red", "green", "blue"], dtype=object)[y],
                         "v": list(X[:, 1:].astype(np.float32))})


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything MLflow writes to its default store lands here


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store with one logged model registered as version 1."""
    tmp = tmp_path_factory.mktemp("digest")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    exp = runs.ensure_experiment(uri, "digest", (tmp / "mlartifacts").as_uri())
    client = MlflowClient(uri, registry_uri=uri)
    run_id = client.create_run(exp).info.run_id
    df = make_frame()
    encoder = FeatureEncoder(FEATURES).fit(df)
    est = DeepEmbeddedClustering(3, n_components=3, hidden=(16,), pretrain_epochs=3, max_iter=10,
                                 batch_size=32, random_state=0).fit(encoder.transform(df))
    model_uri = packaging.log_model(run_id, uri, est, encoder, df.head(5))
    version = packaging.register_version(uri, model_uri, MODEL, run_id=run_id,
                                      tags={"data.run_date": "2026-11-21"})
    client.set_terminated(run_id)
    root = Path(client.get_logged_model(model_uri.removeprefix("models:/"))
                .artifact_location.removeprefix("file://"))
    return SimpleNamespace(uri=uri, client=client, version=version, root=root, df=df,
                           encoder=encoder, est=est, run_id=run_id, model_uri=model_uri)


@pytest.fixture()
def restore(store):
    """Undo whatever a test does to the artifact store directory."""
    before = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    yield store.root
    for p in store.root.rglob("*"):
        if p.is_file() and p not in before:
            p.unlink()
    for p, data in before.items():
        p.write_bytes(data)


def test_registration_records_a_digest_of_every_file(store):
    tags = store.client.get_model_version(MODEL, "1").tags
    manifest_path = store.root / integrity.MANIFEST
    data = manifest_path.read_bytes()
    assert tags[integrity.MANIFEST_TAG] == hashlib.sha256(data).hexdigest()
    manifest = json.loads(data)
    stored = {p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == stored - {integrity.MANIFEST}
    assert {"MLmodel", "pyfunc_model.py", "artifacts/encoder.json",
            "artifacts/estimator.safetensors", "code/decflow/registry/versions.py"
            } <= set(manifest["files"])
    for rel, digest in manifest["files"].items():
        assert digest == hashlib.sha256((store.root / rel).read_bytes()).hexdigest(), rel


def test_untampered_model_loads_and_the_safe_loader_predicts_like_the_pyfunc(store):
    df = make_frame(n_per=10, seed=1)
    expected = scoring.score_frame(store.encoder, store.est, df)
    safe = versions.load_model_safely(store.uri, MODEL, "1")
    pd.testing.assert_frame_equal(safe.predict(df), expected)
    pyfunc = versions.load_scorer(store.uri, MODEL, "1")
    pd.testing.assert_frame_equal(pyfunc.predict(scoring.as_model_input(store.encoder, df)),
                                  safe.predict(df))
    encoder, est = versions.load_components(store.uri, MODEL, "1")
    pd.testing.assert_frame_equal(scoring.score_frame(encoder, est, df), expected)


def test_the_files_of_a_version_are_its_logged_parts_and_workers_score_them_alike(store):
    """``load_files`` (what `decflow score` ships to its workers, no torch in its process)
    gives the logged files' bytes, and the model the workers rebuild from them labels rows as
    the fitted one does."""
    from decflow.engine.payload import ModelPayload, worker_model
    from decflow.registry.names import Artifact

    files = versions.load_files(store.uri, MODEL, "1")
    assert files == ((store.root / Artifact.MODEL_ENCODER).read_bytes(),
                     (store.root / Artifact.MODEL_ESTIMATOR).read_bytes())
    payload = ModelPayload.of(files)
    assert (payload.encoder, payload.estimator) == files
    assert ModelPayload.of(payload) is payload
    df = make_frame(n_per=10, seed=1)
    pd.testing.assert_frame_equal(scoring.score_frame(*worker_model(payload, "cpu"), df),
                                  scoring.score_frame(store.encoder, store.est, df))


@pytest.mark.parametrize("loader", ["load_components", "load_files", "load_scorer",
                                    "load_model_safely"])
def test_changed_weights_are_refused_naming_the_file(store, restore, loader):
    path = restore / "artifacts" / "estimator.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(errors.ModelIntegrityError,
                       match=r"version 1: file artifacts/estimator\.safetensors has sha256 "):
        getattr(versions, loader)(store.uri, MODEL, "1")


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The folder ``tempfile`` creates temporary folders in, for this test."""
    import tempfile

    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_a_scorer_copy_goes_with_the_scorer(store, scratch):
    """``load_scorer`` copies the version into a temporary folder the pyfunc imports from;
    the folder is removed once the scorer is collected (it was left behind at every load)."""
    import gc

    scorer = versions.load_scorer(store.uri, MODEL, "1")
    [copy] = scratch.glob("decflow-scorer-*")
    df = make_frame(n_per=5, seed=2)
    assert len(scorer.predict(scoring.as_model_input(store.encoder, df))) == len(df)
    assert any(p.startswith(str(copy)) for p in sys.path)  # MLflow imports its code from it
    del scorer
    gc.collect()
    assert not copy.exists()
    assert not any(p.startswith(str(copy)) for p in sys.path)


def test_a_scorer_copy_is_removed_when_loading_fails_or_the_process_exits(store, restore,
                                                                          scratch):
    import subprocess

    path = restore / "artifacts" / "estimator.safetensors"
    tampered = bytearray(path.read_bytes())
    tampered[-1] ^= 0xFF
    original = path.read_bytes()
    path.write_bytes(bytes(tampered))
    with pytest.raises(errors.ModelIntegrityError, match=r"estimator\.safetensors has sha256 "):
        versions.load_scorer(store.uri, MODEL, "1")
    assert list(scratch.glob("decflow-scorer-*")) == []
    path.write_bytes(original)
    code = ("import tempfile, sys\n"
            f"tempfile.tempdir = {str(scratch)!r}\n"
            "from decflow.registry import versions\n"
            f"scorer = versions.load_scorer({store.uri!r}, {MODEL!r}, '1')\n"
            "import pathlib\n"
            "print(len(list(pathlib.Path(tempfile.tempdir).glob('decflow-scorer-*'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"  # the copy existed while the scorer was loaded
    assert list(scratch.glob("decflow-scorer-*")) == []


def test_changed_code_is_refused_before_it_runs(store, restore, tmp_path):
    marker = tmp_path / "code-ran"
    with open(restore / "pyfunc_model.py", "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    with pytest.raises(errors.ModelIntegrityError, match=r"file pyfunc_model\.py has sha256 "):
        versions.load_scorer(store.uri, MODEL, "1")
    assert not marker.exists()
    with pytest.raises(errors.ModelIntegrityError, match=r"file pyfunc_model\.py"):
        versions.load_components(store.uri, MODEL, "1")


def test_an_added_file_is_refused(store, restore):
    (restore / "code" / "decflow" / "sitecustomize.py").write_text("import os\n")
    with pytest.raises(errors.ModelIntegrityError,
                       match=r"file code/decflow/sitecustomize\.py is not in the manifest"):
        versions.load_model_safely(store.uri, MODEL, "1")


def plant_bytecode(root: Path, marker: Path) -> Path:
    """A ``__pycache__`` entry for pyfunc_model.py that Python would run instead of the checked
    source (unchecked-hash pycs are never compared with their source)."""
    import py_compile

    evil = root.parent / "evil_pyfunc_model.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n"
                    + (root / "pyfunc_model.py").read_text())
    tag = sys.implementation.cache_tag
    pyc = root / "__pycache__" / f"pyfunc_model.{tag}.pyc"
    py_compile.compile(str(evil), cfile=str(pyc), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    evil.unlink()
    return pyc


def test_planted_bytecode_is_dropped_not_run(store, restore, tmp_path):
    """What MLflow/Python write into a model directory loaded in place is not part of the model;
    decflow's loaders delete it from their copy, so stored bytecode never runs."""
    marker = tmp_path / "bytecode-ran"
    plant_bytecode(restore, marker)
    (restore / "registered_model_meta").write_text("model_name: digest-test\n")
    scorer = versions.load_scorer(store.uri, MODEL, "1")
    assert not marker.exists()
    df = make_frame(n_per=5, seed=2)
    pd.testing.assert_frame_equal(scorer.predict(scoring.as_model_input(store.encoder, df)),
                                  scoring.score_frame(store.encoder, store.est, df))


def test_planted_bytecode_runs_when_loaded_without_decflow(store, restore, tmp_path):
    """The control for the test above: MLflow's own loader runs the planted bytecode."""
    import mlflow.pyfunc

    marker = tmp_path / "bytecode-ran"
    plant_bytecode(restore, marker)
    mlflow.pyfunc.load_model(str(restore))
    assert marker.exists()


def test_a_removed_file_is_refused(store, restore):
    (restore / "artifacts" / "encoder.json").unlink()
    with pytest.raises(errors.ModelIntegrityError,
                       match=r"file artifacts/encoder\.json .*is missing"):
        versions.load_components(store.uri, MODEL, "1")


def test_a_rewritten_manifest_is_refused(store, restore):
    """Changing a file and its manifest entry together does not help: the manifest's own digest
    is a version tag in the tracking database, not in the artifact store."""
    path = restore / "artifacts" / "encoder.json"
    path.write_text(path.read_text().replace('"red"', '"RED"'))
    manifest = json.loads((restore / integrity.MANIFEST).read_text())
    manifest["files"]["artifacts/encoder.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (restore / integrity.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(errors.ModelIntegrityError,
                       match=rf"file {integrity.MANIFEST} has sha256 [0-9a-f]{{64}}, but the "
                             rf"version's tag {integrity.MANIFEST_TAG} says"):
        versions.load_components(store.uri, MODEL, "1")


def test_a_version_without_a_digest_is_refused(store):
    client = store.client
    mv = client.create_model_version(MODEL, source=client.get_model_version(MODEL, "1").source,
                                     run_id=store.run_id)
    with pytest.raises(errors.ModelIntegrityError,
                       match=rf"version {mv.version} has no {integrity.MANIFEST_TAG} tag"):
        versions.load_components(store.uri, MODEL, str(mv.version))
    client.delete_model_version(MODEL, mv.version)


def test_a_version_from_before_digests_is_adopted_through_the_cli(store, tmp_path):
    """A version registered before decflow recorded digests: no manifest among its files, no
    tag. It is refused, `decflow adopt` records the digest of its files as they are, then it
    loads (and a change after that is refused again)."""
    import shutil

    import yaml
    from typer.testing import CliRunner

    from decflow.flows.cli import app

    old = tmp_path / "old-model"
    shutil.copytree(store.root, old)
    (old / integrity.MANIFEST).unlink()
    mv = store.client.create_model_version(MODEL, source=old.as_uri(), run_id=store.run_id)
    with pytest.raises(errors.ModelIntegrityError, match=r"`decflow adopt --model <N>`"):
        versions.load_components(store.uri, MODEL, str(mv.version))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "registry": {
        "tracking_uri": store.uri, "model_name": MODEL}}))
    runner = CliRunner()
    out = runner.invoke(app, ["adopt", "--config", str(config), "--model", str(mv.version)])
    assert out.exit_code == 0, out.output
    assert f"version {mv.version}: recorded the sha256 of its" in out.output
    tags = store.client.get_model_version(MODEL, str(mv.version)).tags
    manifest = old / integrity.MANIFEST
    assert tags[integrity.MANIFEST_TAG] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert integrity.ADOPTED_TAG in tags
    adopted = versions.load_components(store.uri, MODEL, str(mv.version))
    pd.testing.assert_frame_equal(adopted.predict(store.df),
                                  versions.load_components(store.uri, MODEL, "1").predict(
                                      store.df))
    again = runner.invoke(app, ["adopt", "--config", str(config), "--model", str(mv.version)])
    assert again.exit_code == 2 and "already has a content digest" in again.output
    weights = next(old.rglob("estimator.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(errors.ModelIntegrityError, match="estimator.safetensors"):
        versions.load_components(store.uri, MODEL, str(mv.version))
    store.client.delete_model_version(MODEL, mv.version)


def test_the_safe_loader_imports_nothing_from_the_model(store):
    before = {name: getattr(mod, "__file__", None) for name, mod in list(sys.modules.items())}
    versions.load_model_safely(store.uri, MODEL, "1")
    new = {name: f for name, mod in list(sys.modules.items())
           if (f := getattr(mod, "__file__", None)) and before.get(name) != f}
    assert not [n for n, f in new.items() if "decflow-" in f or "/code/" in f], new
