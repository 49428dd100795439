"""Planted groups survive uninformative columns beside them.

Groups are planted in a few numeric columns; beside them sit columns that carry nothing: numbers
in other units and shapes, categories of 2 to 60 values, free text. With the default feature
and model settings the labels recover the groups (ARI >= 0.95), the noise columns get weight
0, and the cluster profiles name the informative columns, not the noise. The network is
smaller and pretrains for fewer steps than the default, for the test's time only: what is
clustered (column weights, the view space, the views) is decided by the defaults.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from decflow import DegenerateClusterWarning
from decflow.config import PipelineConfig
from decflow.insight.profiles import cluster_profiles
from decflow.model.building import estimator_from_config
from decflow.model.features import FeatureEncoder
from decflow.model.metrics import ari

pytestmark = pytest.mark.slow  # three manifold fits on wide tables: minutes on 2 cores

WORDS = np.array([f"word{i}" for i in range(400)])


def planted_frame(n, seed, *, centers, numeric=0, categorical=(), text=0, sizes=None):
    """`g0..` informative columns (group means ``centers``, unit noise) and noise columns:
    `num0..` (numbers in other units and shapes), `cat0..` (uniform over the given
    cardinalities), `text0..` (6 random words of 400)."""
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, dtype=float)
    groups = rng.choice(len(centers), n, p=sizes)
    frame = pd.DataFrame(centers[groups] + rng.normal(size=(n, centers.shape[1])),
                         columns=[f"g{j}" for j in range(centers.shape[1])])
    shapes = [lambda: rng.normal(5e4, 2e4, n), lambda: rng.lognormal(2, 1, n),
              lambda: rng.uniform(0, 1, n), lambda: rng.integers(0, 100, n).astype(float)]
    for j in range(numeric):
        frame[f"num{j}"] = shapes[j % len(shapes)]()
    for j, cardinality in enumerate(categorical):
        frame[f"cat{j}"] = rng.choice([f"v{i}" for i in range(cardinality)], n)
    for j in range(text):
        frame[f"text{j}"] = [" ".join(rng.choice(WORDS, 6)) for _ in range(n)]
    frame.insert(0, "id", np.arange(n))
    return frame, groups


CASES = {
    # the reported case: three groups 6 std apart in two columns, one random 3-valued category
    "one-category": dict(centers=[[0, 0], [6, 0], [0, 6]], categorical=(3,)),
    "one-of-each": dict(centers=[[0, 0], [6, 0], [0, 6]], numeric=1, categorical=(5,), text=1),
    "several-of-each": dict(centers=[[0, 0, 0], [6, 0, 6], [0, 6, 6], [6, 6, 0]],
                            numeric=4, categorical=(2, 12, 60), text=2,
                            sizes=[0.4, 0.3, 0.2, 0.1]),
}


def fit(frame, k):
    informative = [c for c in frame if c.startswith("g")]
    config = PipelineConfig.model_validate({
        "features": {"numeric": informative + [c for c in frame if c.startswith("num")],
                     "categorical": [c for c in frame if c.startswith("cat")],
                     "text": [c for c in frame if c.startswith("text")]},
        "model": {"n_clusters": k, "hidden": [128, 128, 256]},
        "train": {"pretrain_steps": 600}})
    encoder = FeatureEncoder(config.features)
    X = encoder.fit_transform(frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = estimator_from_config(config).fit(X)
    degenerate = [w for w in caught if issubclass(w.category, DegenerateClusterWarning)]
    assert not degenerate, degenerate[0].message
    return config, encoder, X, est


@pytest.mark.parametrize("case", list(CASES))
def test_planted_groups_are_recovered_and_profiled_by_their_columns(case):
    spec = CASES[case]
    frame, groups = planted_frame(600, seed=len(case), **spec)
    k = len(spec["centers"])
    config, encoder, X, est = fit(frame, k)
    informative = {c for c in frame if c.startswith("g")}
    noise = set(config.features.columns()) - informative

    assert {c: w for c, w in encoder.weights_.items() if c in noise} == dict.fromkeys(noise, 0.0)
    assert all(encoder.weights_[c] == 1.0 for c in informative)
    assert est.view_space_ == "input"  # the weighted table spans fewer directions than z
    assert ari(groups, est.labels_) >= 0.95

    ids, confidence, distance = est.assign(X)
    profiles = cluster_profiles(frame, ids, confidence, distance, config.features, "id", k)
    named = {f["feature"] for c in profiles.clusters for f in c["numeric"]}
    named |= {g["column"] for c in profiles.clusters for g in c["categories"]}
    named |= {t["column"] for c in profiles.clusters for t in c["terms"]}
    assert named == informative
