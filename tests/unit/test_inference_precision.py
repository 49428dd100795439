"""Scoring's arithmetic (``inference_precision``): bf16 where the device multiplies it natively,
float32 elsewhere or when asked; training keeps its own precision whatever the setting."""

import copy
import json

import numpy as np
import pytest
import torch

from testkit import DEC_FAST, DEC_FAST_KMEANS
from decflow import DeepEmbeddedClustering
from decflow.model import training

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx512f avx512_fp16 amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq\n"


@pytest.mark.parametrize("cpuinfo, expected", [(ZEN4, True), (SAPPHIRE_RAPIDS, True),
                                               (SKYLAKE, False), ("processor\t: 0\n", False)])
def test_bf16_instructions_are_read_from_the_cpu_flags(cpuinfo, expected):
    assert training.bf16_in_cpuinfo(cpuinfo) is expected


@pytest.mark.parametrize("precision, cpu_bf16, device, expected", [
    ("auto", True, "cpu", True),
    ("auto", False, "cpu", False),  # emulated bf16 is no faster than float32
    ("auto", False, "cuda", True),  # as training's fine-tuning on CUDA
    ("float32", True, "cpu", False),
    ("float32", False, "cuda", False),
    ("bfloat16", False, "cpu", True),
    ("bfloat16", True, "mps", False),  # autocast here covers CPU and CUDA only
])
def test_uses_bf16_follows_the_setting_and_the_device(monkeypatch, precision, cpu_bf16, device,
                                                      expected):
    monkeypatch.setattr(training, "cpu_multiplies_bf16", lambda: cpu_bf16)
    assert training.uses_bf16(torch.device(device), precision) is expected


def test_an_unknown_precision_is_refused_naming_the_choices(dec_kmeans_on_blobs, blobs):
    est = copy.deepcopy(dec_kmeans_on_blobs).set_params(inference_precision="fp16")
    with pytest.raises(ValueError, match=r"inference_precision must be one of \('auto', "
                                         r"'float32', 'bfloat16'\), got 'fp16'"):
        est.predict(blobs[0])
    with pytest.raises(ValueError, match=r"inference_precision='fp16' must be one of"):
        DeepEmbeddedClustering(4, inference_precision="fp16", **DEC_FAST_KMEANS).fit(blobs[0])


def test_bf16_scoring_runs_in_bf16_stays_close_and_keeps_the_labels(dec_kmeans_on_blobs, blobs):
    X = np.tile(blobs[0], (3, 1))  # 720 rows: more than one scoring batch
    f32 = copy.deepcopy(dec_kmeans_on_blobs).set_params(inference_precision="float32")
    bf16 = copy.deepcopy(dec_kmeans_on_blobs).set_params(inference_precision="bfloat16")
    z32, z16 = f32.transform(X), bf16.transform(X)
    assert z16.dtype == np.float32
    assert not np.array_equal(z16, z32), "the bf16 setting did not change the arithmetic"
    # 8 significant bits per layer: within 2% of the embedding's scale
    np.testing.assert_allclose(z16, z32, rtol=0, atol=0.02 * np.abs(z32).max())
    ids32, conf32, dist32 = f32.assign(X)
    ids16, conf16, dist16 = bf16.assign(X)
    np.testing.assert_array_equal(ids16, ids32)  # well-separated blobs: no row near a boundary
    np.testing.assert_allclose(conf16, conf32, atol=0.01)
    np.testing.assert_array_equal(bf16.predict(X), ids32)


@pytest.mark.parametrize("init", ["k-means", "manifold"])
def test_training_does_not_follow_the_scoring_precision(blobs, monkeypatch, init):
    """Fitting embeds its rows for the initialisation (its views and k-means) and at every
    target update; all of it keeps training's precision, so the setting leaves the fitted
    model alone, and scoring afterwards follows it."""
    X = blobs[0]
    seen = []
    real = training.autocast

    def recording(device, bf16=None):
        seen.append(bf16)
        return real(device, bf16)

    monkeypatch.setattr(training, "autocast", recording)
    kw = dict(DEC_FAST, init=init, view_space="embedding")
    fitted = {}
    for precision in ("float32", "bfloat16"):
        seen.clear()
        fitted[precision] = DeepEmbeddedClustering(4, random_state=5, inference_precision=precision,
                                                   **kw).fit(X)
        assert seen and set(seen) == {None}, precision  # training's rule at every forward
    a, b = fitted["float32"], fitted["bfloat16"]
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    for name, weights in a.autoencoder_.state_dict().items():
        assert torch.equal(weights, b.autoencoder_.state_dict()[name]), name
    seen.clear()
    b.transform(X)
    a.transform(X, training=True)
    assert seen == [True, None]


def test_the_setting_is_saved_and_older_files_keep_their_arithmetic(dec_kmeans_on_blobs, blobs,
                                                                    tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    X = blobs[0]
    est = copy.deepcopy(dec_kmeans_on_blobs).set_params(inference_precision="float32")
    path = est.save(tmp_path / "model.safetensors")
    assert DeepEmbeddedClustering.load(path).inference_precision == "float32"
    with safe_open(str(path), framework="pt") as f:  # as written before the setting existed
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    settings = json.loads(meta["settings"])
    del settings["inference_precision"]
    save_file(tensors, str(tmp_path / "older.safetensors"),
              metadata={**meta, "settings": json.dumps(settings)})
    # it scored in float32 on a CPU then, and keeps doing so (bf16 on CUDA, as then)
    older = DeepEmbeddedClustering.load(tmp_path / "older.safetensors")
    assert older.inference_precision == "float32"
    np.testing.assert_array_equal(older.transform(X), est.transform(X))


def test_the_config_sets_the_estimators_precision(tmp_path):
    import yaml

    from decflow.config import load_config
    from decflow.model.building import estimator_from_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"source": {"uri": "data/src", "id_column": "id"},
                                    "features": {"numeric": ["x"]}}))
    assert estimator_from_config(load_config(path, env={})).inference_precision == "auto"
    config = load_config(path, {"train.inference_precision": "float32"}, env={})
    assert estimator_from_config(config).inference_precision == "float32"
