import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testkit import DEC_FAST, DEC_FAST_KMEANS
from decflow import DeepEmbeddedClustering, DegenerateClusterWarning
from decflow.model.metrics import cluster_accuracy


@pytest.fixture
def fitted(dec_on_blobs):
    """DeepEmbeddedClustering(4, random_state=0, **DEC_FAST) on the blobs (shared: read only)."""
    return dec_on_blobs


def test_fit_sets_attributes_and_finds_blobs(fitted, blobs):
    X, y = blobs
    assert fitted.cluster_centers_.shape == (4, 4)
    assert fitted.labels_.shape == (len(X),)
    assert fitted.n_iter_ > 0
    assert len(fitted.history_["pretrain_loss"]) == 15
    assert fitted.history_["pretrain_loss"][-1] < fitted.history_["pretrain_loss"][0]
    assert {"kl", "reconstruction", "delta_label"} <= set(fitted.history_["finetune"][0])
    assert set(fitted.timings_) == {"pretrain", "init", "finetune"}
    assert cluster_accuracy(y, fitted.labels_) > 0.95


def test_predict_matches_fit_labels_and_outputs(fitted, blobs):
    X, _ = blobs
    pred = fitted.predict(X)
    # labels_ come from the same final model: identical up to relabelling (here exactly)
    assert cluster_accuracy(fitted.labels_, pred) == 1.0
    q = fitted.predict_proba(X)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    assert fitted.transform(X).shape == (len(X), 4)
    ids, conf, dist = fitted.assign(X)
    np.testing.assert_array_equal(ids, pred)
    np.testing.assert_allclose(conf, q.max(1), rtol=1e-6)
    assert (dist >= 0).all()


@pytest.mark.parametrize("init", ["k-means", "manifold"])
def test_fit_predict_equals_fit_then_predict(blobs, init):
    X, _ = blobs
    a = DeepEmbeddedClustering(4, init=init, random_state=3, **DEC_FAST)
    labels = a.fit_predict(X)
    assert cluster_accuracy(labels, a.predict(X)) == 1.0


def test_determinism_with_random_state(blobs):
    X, _ = blobs
    kw = DEC_FAST_KMEANS
    a = DeepEmbeddedClustering(4, random_state=7, **kw).fit(X)
    b = DeepEmbeddedClustering(4, random_state=7, **kw).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_init_array_skips_internal_kmeans(blobs, dec_kmeans_on_blobs, monkeypatch):
    import decflow.model.estimator as estimator_module

    X, _ = blobs
    ref = dec_kmeans_on_blobs  # DeepEmbeddedClustering(4, random_state=0, **DEC_FAST_KMEANS)
    init = ref.cluster_centers_ + 0.01

    def fail(*args, **kwargs):
        raise AssertionError("internal initialisation must not run when init is an array")

    monkeypatch.setattr(estimator_module, "kmeans_init", fail)
    monkeypatch.setattr(estimator_module, "manifold_init", fail)
    # same seed -> same pretrained embedding; one fine-tuning step barely moves the centroids
    est = DeepEmbeddedClustering(4, init=init, random_state=0, **dict(DEC_FAST, max_iter=1))
    est.fit(X)
    assert np.abs(est.cluster_centers_ - init).max() < 0.01


def test_save_load_round_trip(fitted, blobs, tmp_path):
    X, _ = blobs
    path = fitted.save(tmp_path / "model.safetensors")
    # same device as the fit: the model's inference_precision gives the same arithmetic
    device = str(next(fitted.autoencoder_.parameters()).device)
    loaded = DeepEmbeddedClustering.load(path, device=device)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert loaded.get_params()["n_clusters"] == 4
    assert loaded.history_ == fitted.history_
    assert loaded.view_space_ == fitted.view_space_ == "input"  # 4 blobs span 3 directions
    assert not list(tmp_path.glob("*.tmp"))


def test_load_rejects_foreign_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="not a decflow model file"):
        DeepEmbeddedClustering.load(p)


@pytest.mark.parametrize("kwargs, X_fn, message", [
    ({"n_clusters": 1}, lambda X: X, "n_clusters=1 must be an integer >= 2"),
    ({"n_clusters": 4}, lambda X: X[:3], "n_samples=3 should be >= n_clusters=4"),
    ({"n_clusters": 4}, lambda X: np.where(np.arange(X.size).reshape(X.shape) == 13, np.nan, X),
     r"X contains NaN .* in 1 of 240 rows \(first rows \[1\]; columns \[1\]\)"),
    ({"n_clusters": 4}, lambda X: np.where(np.arange(X.size).reshape(X.shape) == 0, np.inf, X),
     "X contains infinity"),
    ({"n_clusters": 4}, lambda X: X[:, 0], "X must be 2-D"),
    ({"n_clusters": 4, "init": "random"}, lambda X: X, "init='random' must be one of"),
    ({"n_clusters": 4, "init": np.zeros((3, 4))}, lambda X: X, r"init has shape \(3, 4\)"),
    # a seed only: a RandomState has no place in the saved settings (JSON)
    ({"n_clusters": 4, "random_state": np.random.RandomState(0)}, lambda X: X,
     "random_state=RandomState.* must be None or an integer"),
])
def test_bad_input_at_fit(blobs, kwargs, X_fn, message):
    X, _ = blobs
    params = dict(DEC_FAST, **kwargs)
    with pytest.raises(ValueError, match=message):
        DeepEmbeddedClustering(**params).fit(X_fn(X.copy()))


def test_wrong_dimensionality_at_predict(fitted, blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="X has 11 features, but DeepEmbeddedClustering is "
                                         "expecting 12 features"):
        fitted.predict(X[:, :11])


def test_degenerate_clusters_are_reported(blobs):
    X, _ = blobs
    # 12 clusters on 4 blobs with a high floor: some clusters must end up tiny or empty
    est = DeepEmbeddedClustering(12, init="k-means", random_state=0, min_cluster_size=0.9,
                                 **DEC_FAST)
    with pytest.warns(DegenerateClusterWarning, match="cluster id"):
        est.fit(X)
    assert est.degenerate_clusters_
    assert all(size < 0.9 * len(X) / 12 for size in est.degenerate_clusters_.values())


@pytest.mark.parametrize("setting, space", [("auto", "input"), ("embedding", "embedding")])
def test_views_of_the_input_when_it_spans_fewer_directions_than_z(setting, space):
    # 200 rows on a 2-d plane inside 12 columns: an embedding of 4 compresses nothing
    rng = np.random.default_rng(0)
    plane = np.repeat([[0, 0], [8, 0], [0, 8]], [70, 70, 60], axis=0) + rng.normal(size=(200, 2))
    X = (plane @ rng.normal(size=(2, 12))).astype(np.float32)
    est = DeepEmbeddedClustering(3, random_state=0, view_space=setting, **DEC_FAST).fit(X)
    assert est.view_space_ == space and est.input_dimension_ < 2.01
    truth = np.repeat([0, 1, 2], [70, 70, 60])
    assert cluster_accuracy(truth, est.labels_) > 0.95


@pytest.mark.slow  # imports the library in a new interpreter: over 3 s
def test_library_never_imports_prefect():
    src = Path(__file__).resolve().parents[2] / "src" / "decflow"
    offenders = [str(p) for p in src.rglob("*.py")
                 if any(line.strip().startswith(("import prefect", "from prefect"))
                        for line in p.read_text().splitlines())]
    assert offenders == []
    code = ("import sys, decflow, decflow.model.estimator, decflow.model.training, decflow.model.metrics; "
            "sys.exit(1 if any(m.split('.')[0] == 'prefect' for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_fit_equals_pretrain_then_fine_tune(blobs, fitted):
    X, _ = blobs
    a = fitted  # DeepEmbeddedClustering(4, random_state=0, **DEC_FAST).fit(X)
    b = DeepEmbeddedClustering(4, random_state=0, **DEC_FAST).pretrain(X).fine_tune(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("rows, kept, steps", [
    (1_797, True, 500),  # digits: 10 passes of 8 steps, raised to 500
    (9_298, True, 500),  # USPS: 10 passes of 37 steps
    (20_000, True, 790),  # Letter: 10 passes of 79 steps
    (51_200, True, 2_000),  # the bound binds from here up
    (200_000, True, 2_000),  # a nightly's default training sample (5,000 before)
    (200_000, False, 20_000),  # DEC's own target: 30 passes, at most 20,000
    (5_000, False, 600),
])
def test_auto_fine_tuning_steps_by_rows(rows, kept, steps):
    assert DeepEmbeddedClustering(10).finetune_steps_for(rows, kept_target=kept) == steps
    assert DeepEmbeddedClustering(10, max_iter=7).finetune_steps_for(rows, kept) == 7


def test_fine_tuning_with_a_kept_target_runs_the_auto_steps(blobs):
    # batches of one row: a pass is 240 steps, so the kept target's 10 passes meet its upper
    # bound (2,000), and DEC's own target would run 30 passes (7,200)
    X, y = blobs
    target = np.eye(4, dtype=np.float32)[y]  # the truth as the kept initial target
    settings = {**DEC_FAST_KMEANS, "max_iter": "auto", "pretrain_epochs": 1, "batch_size": 1}
    est = DeepEmbeddedClustering(4, random_state=0, **settings).pretrain(X)
    centers = np.stack([est.transform(X)[y == j].mean(0) for j in range(4)])
    est.fine_tune(X, init=centers, target=target)
    assert est.n_iter_ == 2_000
    assert est.finetune_steps_for(len(X), kept_target=False) == 7_200


def test_fine_tune_before_pretrain_is_an_error(blobs):
    with pytest.raises(ValueError, match="call pretrain"):
        DeepEmbeddedClustering(4, **DEC_FAST).fine_tune(blobs[0])


def test_warm_start_reuses_weights(blobs, fitted):
    X, _ = blobs
    a = fitted  # DeepEmbeddedClustering(4, random_state=0, **DEC_FAST).fit(X)
    b = DeepEmbeddedClustering(4, random_state=1, **DEC_FAST).pretrain(
        X, warm_start=a.autoencoder_.state_dict(), epochs=0)
    np.testing.assert_allclose(b.transform(X), a.transform(X), rtol=1e-5, atol=1e-5)
    wrong = dict(DEC_FAST, n_components=3)
    with pytest.raises(ValueError, match="warm_start weights do not fit"):
        DeepEmbeddedClustering(4, **wrong).pretrain(X, warm_start=a.autoencoder_.state_dict())


def test_permute_clusters_relabels_consistently(blobs, fitted):
    X, _ = blobs
    est = copy.deepcopy(fitted)  # renumbered below: the shared fit stays as it is
    before = est.predict(X)
    order = np.array([2, 0, 3, 1])
    est.permute_clusters(order)
    # new id j is old id order[j]
    np.testing.assert_array_equal(order[est.predict(X)], before)
    np.testing.assert_array_equal(order[est.labels_], before)
    with pytest.raises(ValueError, match="permutation"):
        est.permute_clusters([0, 0, 1, 2])


def test_warm_start_weights_only_for_the_same_layout_and_architecture(fitted, blobs):
    import pandas as pd

    from decflow.config import FeaturesConfig
    from decflow.model.building import compatible_weights
    from decflow.model.features import FeatureEncoder

    X, _ = blobs
    frame = pd.DataFrame(X, columns=[f"c{i}" for i in range(12)])
    encoder = FeatureEncoder(FeaturesConfig(numeric=list(frame.columns))).fit(frame)
    same = FeatureEncoder(FeaturesConfig(numeric=list(frame.columns))).fit(frame)
    fewer = FeatureEncoder(FeaturesConfig(numeric=list(frame.columns[:11]))).fit(frame)
    hidden, k = list(fitted.hidden), fitted.n_components
    weights = compatible_weights(encoder, fitted, same, hidden, k)
    expected = fitted.autoencoder_.state_dict()
    assert weights.keys() == expected.keys()
    assert all(w.data_ptr() != expected[n].data_ptr() for n, w in weights.items())  # a copy
    assert compatible_weights(encoder, fitted, fewer, hidden, k) is None  # another layout
    assert compatible_weights(encoder, fitted, same, hidden + [8], k) is None
    assert compatible_weights(encoder, fitted, same, hidden, k + 1) is None


_ENCODE_MEMORY = """
import resource, sys
import torch
from decflow.engine.compute import keep_large_allocations
from decflow.model.nn import Autoencoder
from decflow.model.training import encode

keep_large_allocations()  # as on a scoring worker: 32-MB activations come from the heap
torch.manual_seed(0)
torch.set_num_threads(1)
ae = Autoencoder(78, [500, 500, 2000], 10)
X = torch.randn(65_536, 78)
cpu = torch.device("cpu")
small = encode(ae, X[:4096], cpu, 4096)  # one batch: the allocator's working set
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
z = encode(ae, X, cpu, 4096)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
assert z.shape == (65_536, 10) and torch.equal(z[:4096], small), "wrong embedding"
print(f"{grown:.0f}")
"""


def test_on_a_cpu_rows_are_embedded_in_cache_sized_batches_with_the_same_result(fitted, blobs):
    """Scoring on a CPU forwards ``CPU_ENCODE_BATCH_ROWS`` rows at a time (a 512 x 2000
    activation stays in cache; 4,096 rows ran 18% slower a thread), and the labels are those
    of one forward over all rows (in float32; bf16 is compared in test_inference_precision)."""
    import torch

    from decflow.model.training import CPU_ENCODE_BATCH_ROWS

    fitted = copy.deepcopy(fitted).set_params(inference_precision="float32")
    X = np.tile(blobs[0], (6, 1))  # 1,440 rows: two full batches and one of 416
    sizes = []
    hook = fitted.autoencoder_.encoder.register_forward_hook(
        lambda module, args, out: sizes.append(len(args[0])))
    try:
        ids, conf, dist = fitted.assign(X)
    finally:
        hook.remove()
    assert CPU_ENCODE_BATCH_ROWS == 512
    assert sizes == [512, 512, 416]
    with torch.no_grad():  # one forward over all rows
        z = fitted.autoencoder_.encode(fitted._to_tensor(X, torch.device("cpu")))
        whole = fitted._clustering(z).argmax(dim=1).numpy()
    np.testing.assert_allclose(fitted.transform(X), z.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ids, whole)


@pytest.mark.slow  # a new interpreter with torch: about 5 s
def test_embedding_many_batches_does_not_grow_memory_per_batch():
    """16 batches of 4,096 rows through a 2,000-wide layer (32 MB of activations each): the
    process keeps about one batch's working set, not one per batch (it grew by 0.5 GB)."""
    out = subprocess.run([sys.executable, "-c", _ENCODE_MEMORY], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 128, f"peak RSS grew by {grown_mib:.0f} MiB embedding 65,536 rows"


def test_on_a_cpu_pretraining_and_fine_tuning_step_with_fused_adam(blobs, monkeypatch):
    """Both training optimizers use torch's fused kernel on a CPU (a quarter less per
    pretraining and fine-tuning step on 2 cores), and the fit still finds the blobs."""
    import torch

    made = []

    def recording(cls):
        class Recording(cls):
            def __init__(self, params, **kwargs):
                super().__init__(params, **kwargs)
                made.append((cls.__name__, self.defaults["fused"]))
        return Recording

    monkeypatch.setattr(torch.optim, "AdamW", recording(torch.optim.AdamW))
    monkeypatch.setattr(torch.optim, "Adam", recording(torch.optim.Adam))
    X, y = blobs
    est = DeepEmbeddedClustering(4, random_state=0, device="cpu", **DEC_FAST_KMEANS).fit(X)
    assert made == [("AdamW", True), ("Adam", True)]
    assert cluster_accuracy(y, est.labels_) > 0.95
