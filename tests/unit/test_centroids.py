"""The nightly's initial centroids over Dask: k-means on z, or the manifold init with one Dask
k-means per view, and what each reports."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from decflow.config import ComputeConfig, PipelineConfig
from decflow.engine import centroids
from decflow.engine.compute import dask_client
from decflow.model.building import estimator_from_config

pytestmark = pytest.mark.slow  # a Dask cluster


@pytest.fixture(scope="module")
def three_blobs():
    X, y = make_blobs(n_samples=600, centers=3, n_features=8, cluster_std=0.6, random_state=0)
    return X.astype(np.float32), y


def _fit(X, init: str):
    config = PipelineConfig(model={"n_clusters": 3, "n_components": 3, "hidden": [16],
                                   "init": init, "init_views": 2, "init_view_rows": 300},
                            train={"pretrain_epochs": 2, "random_state": 0})
    est = estimator_from_config(config)
    est.pretrain(X)
    return est, config


@pytest.mark.parametrize("init", ["k-means", "manifold"])
def test_initial_centroids_separate_the_blobs(three_blobs, init):
    X, y = three_blobs
    est, config = _fit(X, init)
    with dask_client(ComputeConfig(n_workers=1, threads_per_worker=1, processes=False)) as c:
        got = centroids.init_centroids(est, X, config, c)
    assert got.centers.shape == (3, 3)
    Z = est.transform(X)
    nearest = ((Z[:, None, :] - got.centers[None]) ** 2).sum(-1).argmin(1)
    assert adjusted_rand_score(y, nearest) > 0.9
    assert {"kmeans_inertia", "kmeans_n_iter", "seconds_init"} <= set(got.metrics)
    if init == "manifold":
        assert got.target.shape == (600, 3)
        np.testing.assert_allclose(got.target.sum(1), 1.0, rtol=1e-5)
        # three blobs span ~1.6 directions of the scaled input (<= n_components): views of it
        assert got.view_space == "input" and got.metrics["input_dimension"] < 3
        assert got.metrics["init_candidate"] >= 0 and got.metrics["init_view_rows"] == 300
    else:
        assert got.target is None and got.view_space is None
